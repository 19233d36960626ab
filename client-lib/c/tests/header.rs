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

/// The header stands alone in strict C99 and in C++: it brings in the
/// system headers whose types and constants its functions use.
#[test]
fn header_compiles_as_c_and_cxx() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = std::env::temp_dir().join(format!("tcpd-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let source = dir.join("use_header.c");
    std::fs::write(
        &source,
        "#include <tcpd.h>\n\
         int main(void) {\n\
             struct pollfd p = { 0, POLLIN, 0 };\n\
             int one = 1;\n\
             (void)tcpd_setsockopt(3, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);\n\
             (void)tcpd_poll(&p, 1, 0);\n\
             return tcpd_fcntl(3, F_GETFL) | tcpd_fcntl(3, F_SETFL, O_NONBLOCK);\n\
         }\n",
    )
    .expect("write source");
    let compilers: [(&str, &[&str]); 2] = [
        (
            "cc",
            &["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"],
        ),
        ("c++", &["-x", "c++", "-Wall", "-Wextra", "-Werror"]),
    ];
    for (compiler, flags) in compilers {
        let out = match std::process::Command::new(compiler)
            .args(flags)
            .arg("-fsyntax-only")
            .arg("-I")
            .arg(&include)
            .arg(&source)
            .output()
        {
            Ok(out) => out,
            Err(e) if compiler == "c++" => {
                eprintln!("SKIP the C++ check: {compiler}: {e}");
                continue;
            }
            Err(e) => panic!("{compiler}: {e}"),
        };
        assert!(
            out.status.success(),
            "{compiler}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
