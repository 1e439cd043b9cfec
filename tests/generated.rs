//! The checked-in completions and man pages match the CLI definition.

use std::path::Path;

#[test]
fn completions_and_man_pages_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("MCPGW_UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for (rel, contents) in mcpgw::docs::render().unwrap() {
        let path = root.join(&rel);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &contents).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(contents.as_slice()) {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files: {stale:?}; refresh with MCPGW_UPDATE_GENERATED=1 cargo test --test generated"
    );
}
