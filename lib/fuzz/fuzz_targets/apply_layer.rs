//! Fuzzes the layer applier with arbitrary tar streams (plain, or gzip/zstd when the
//! input starts with their magic) and asserts that nothing escapes the rootfs: the
//! sibling directory `outside` stays empty and nothing appears beside the rootfs.
#![no_main]

use crikit::rootfs::layer::{apply, ApplyOptions, Form};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sandbox = tempfile::tempdir().expect("tempdir");
    let root = sandbox.path().join("rootfs");
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&root).expect("mkdir rootfs");
    std::fs::create_dir(&outside).expect("mkdir outside");
    for form in [Form::Copy, Form::Overlay] {
        let opts = ApplyOptions {
            form,
            // Unprivileged semantics: no device nodes, no chown, even when run as root.
            privileged: false,
            digest: None,
            diff_id: None,
            compression: None,
        };
        // Errors are fine; escaping is not.
        let _ = apply(&root, data, "fuzz", &opts);
        assert_eq!(
            std::fs::read_dir(&outside).expect("read outside").count(),
            0,
            "wrote outside the rootfs"
        );
        let mut entries = std::fs::read_dir(sandbox.path())
            .expect("read sandbox")
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>();
        entries.sort();
        assert_eq!(
            entries,
            ["outside", "rootfs"],
            "created something beside the rootfs"
        );
    }
});
