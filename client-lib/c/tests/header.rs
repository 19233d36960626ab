//! The committed C header must be what cbindgen generates from the source:
//! the build writes `OUT_DIR/tcpd.h`, this test compares. To refresh after a
//! change: `cp $OUT_DIR/tcpd.h client-lib/c/include/tcpd.h` (the failure
//! message prints the path).

use std::path::Path;

#[test]
fn header_is_current() {
    let generated = Path::new(env!("OUT_DIR")).join("tcpd.h");
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tcpd.h");
    let generated_text =
        std::fs::read_to_string(&generated).expect("build.rs writes OUT_DIR/tcpd.h");
    let committed_text = std::fs::read_to_string(&committed).expect("include/tcpd.h is committed");
    assert!(
        generated_text == committed_text,
        "include/tcpd.h is stale: cp {} {}",
        generated.display(),
        committed.display()
    );
}
