//! Build script of libtcpd: generates the C header with cbindgen into
//! `OUT_DIR/tcpd.h` (the committed `include/tcpd.h` must match it; the test
//! `header_is_current` compares) and gives the shared library its SONAME.

use std::path::PathBuf;

fn main() {
    // The ABI version of libtcpd: bump with incompatible changes.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtcpd.so.0");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let crate_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(config) => config,
        Err(e) => panic!("client-lib/c/cbindgen.toml: {e}"),
    };
    match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(bindings) => {
            bindings.write_to_file(out_dir.join("tcpd.h"));
        }
        // A header that cannot be generated is a build failure: the committed
        // header would silently go stale otherwise.
        Err(e) => panic!("cbindgen: {e}"),
    }
}
