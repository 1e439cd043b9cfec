//! The `mcpgw` binary: parse, dispatch, exit. Everything else lives in the library.

// Every forwarded call allocates and frees a few dozen small buffers (headers, JSON values,
// futures) across worker threads; glibc malloc spent ~20 % of the gateway's CPU on them
// (profile in docs/PERFORMANCE.md). mimalloc's per-thread free lists cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mcpgw::run()
}
