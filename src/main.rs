//! The `mcpgw` binary: parse, dispatch, exit. Everything else lives in the library.

fn main() -> std::process::ExitCode {
    mcpgw::run()
}
