//! Runs the fuzz targets' checks over the corpus committed in `fuzz/corpus`,
//! so `cargo test` exercises every target without cargo-fuzz. The fuzzing
//! itself runs with `cargo fuzz run <target> -s none` (see fuzz/README.md).

use std::path::{Path, PathBuf};

use nepxy_tests::fuzzing::TARGETS;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn corpus_passes_every_check() {
    for target in &TARGETS {
        let dir = corpus_dir(target.name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("read corpus {}: {error}", dir.display()));
        let mut inputs = 0;
        let mut valid_seeds = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
            let outcome = std::panic::catch_unwind(|| (target.check)(&data));
            assert!(
                outcome.is_ok(),
                "{}: the check failed on {}",
                target.name,
                path.display()
            );
            inputs += 1;

            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with("valid") {
                assert!(
                    (target.accepts)(&data),
                    "{}: the parser rejects the valid seed {}",
                    target.name,
                    path.display()
                );
                valid_seeds += 1;
            }
        }
        assert!(inputs > 0, "{}: the corpus is empty", target.name);
        assert!(
            valid_seeds > 0,
            "{}: the corpus has no seed named valid*",
            target.name
        );
    }
}
