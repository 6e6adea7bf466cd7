fn main() {
    std::process::exit(mailsync::cli::run(std::env::args_os().collect()));
}
