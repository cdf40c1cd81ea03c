fn main() {
    std::process::exit(duet::cli::main());
}
