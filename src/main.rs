fn main() -> std::process::ExitCode {
    drrun::run(std::env::args().collect())
}
