//! Ordering: topological levels and cycle paths, on petgraph.

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Result of ordering one phase's steps. `deps[i]` are the local indices step `i` needs.
pub(super) enum Ordering {
    /// Parallel levels of local indices: every step's dependencies are in earlier levels.
    Levels(Vec<Vec<usize>>),
    /// A dependency cycle, as local indices `a, b, ..., a`.
    Cycle(Vec<usize>),
}

pub(super) fn order(deps: &[Vec<usize>]) -> Ordering {
    let mut graph = DiGraph::<usize, ()>::with_capacity(deps.len(), deps.len());
    let nodes: Vec<NodeIndex> = (0..deps.len()).map(|i| graph.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for d in ds {
            graph.add_edge(nodes[*d], nodes[i], ());
        }
    }
    // tarjan_scc yields components in reverse topological order.
    let mut components = tarjan_scc(&graph);
    if let Some(cycle) = components
        .iter()
        .filter(|c| c.len() > 1 || deps[graph[c[0]]].contains(&graph[c[0]]))
        .min_by_key(|c| c.iter().map(|n| graph[*n]).min())
    {
        let members: Vec<usize> = cycle.iter().map(|n| graph[*n]).collect();
        return Ordering::Cycle(cycle_path(deps, &members));
    }
    components.reverse();
    let mut level = vec![0usize; deps.len()];
    let mut levels: Vec<Vec<usize>> = Vec::new();
    for comp in components {
        let i = graph[comp[0]];
        level[i] = deps[i].iter().map(|d| level[*d] + 1).max().unwrap_or(0);
        if levels.len() <= level[i] {
            levels.resize(level[i] + 1, Vec::new());
        }
        levels[level[i]].push(i);
    }
    for l in &mut levels {
        l.sort_unstable();
    }
    Ordering::Levels(levels)
}

/// A concrete cycle through the strongly connected `members`, starting at the smallest
/// index and following "is needed by" edges: `restore -> deploy -> restore`.
fn cycle_path(deps: &[Vec<usize>], members: &[usize]) -> Vec<usize> {
    let start = *members.iter().min().unwrap();
    // Walk backwards along `deps` (which point at prerequisites) inside the component,
    // then reverse, so the path reads in execution order.
    let mut path = vec![start];
    let mut seen = vec![start];
    let mut current = start;
    loop {
        let next = deps[current]
            .iter()
            .copied()
            .filter(|d| members.contains(d))
            .min()
            .unwrap();
        if next == start {
            path.push(start);
            break;
        }
        if let Some(pos) = seen.iter().position(|s| *s == next) {
            // Entered a smaller loop not through `start`: report that loop.
            let mut inner = path[pos..].to_vec();
            inner.push(next);
            inner.reverse();
            return inner;
        }
        seen.push(next);
        path.push(next);
        current = next;
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_group_independent_steps() {
        // 0, 1 independent; 2 needs both; 3 needs 0.
        let Ordering::Levels(levels) = order(&[vec![], vec![], vec![0, 1], vec![0]]) else {
            panic!()
        };
        assert_eq!(levels, vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn cycles_are_reported_as_paths() {
        // 0 needs 2, 1 needs 0, 2 needs 1: 0 -> 1 -> 2 -> 0 in execution order.
        let Ordering::Cycle(path) = order(&[vec![2], vec![0], vec![1]]) else {
            panic!()
        };
        assert_eq!(path, vec![0, 1, 2, 0]);
        let Ordering::Cycle(path) = order(&[vec![0]]) else {
            panic!()
        };
        assert_eq!(path, vec![0, 0]);
    }
}
