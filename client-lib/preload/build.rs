//! Gives the preload library the SONAME it is installed under
//! (`libtcpd-preload.so`; cargo cannot put a '-' in a library's file name).

fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-soname,libtcpd-preload.so");
    println!("cargo:rerun-if-changed=build.rs");
}
