//! Everything the user sees: events from the engine and the printers that show them.
//! The engine never prints; it sends [`Event`]s to a [`Reporter`].

pub mod drill;
pub mod event;
pub mod junit;
pub mod markdown;
pub mod printer;

pub use event::{Event, StepState};

/// Receives engine events. Implementations must be cheap and never block for long.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// Discards events (tests, benchmarks).
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: &Event) {}
}
