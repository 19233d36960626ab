//! `tcpd-run [--socket PATH] [--preload LIB] [--] PROGRAM [ARGS...]`: runs
//! an unmodified, dynamically linked program with `libtcpd-preload.so` in
//! `LD_PRELOAD`, so its IPv4 TCP sockets are tcpd's.
//!
//! It finds the library (`--preload`, else next to itself, else the
//! package's library directory), appends it to an existing `LD_PRELOAD`,
//! exports `TCPD_SOCKET` when `--socket` is given, refuses programs the
//! dynamic loader will not preload into (statically linked: no `PT_INTERP`
//! in the ELF), and replaces itself with the program (`exec`): the exit
//! status and signals are the program's own.

#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Parser;

/// The library's installed file name (its SONAME).
const LIB_NAME: &str = "libtcpd-preload.so";
/// The name cargo gives it in a build tree.
const CARGO_LIB_NAME: &str = "libtcpd_preload.so";

/// Run a program with its TCP/IPv4 sockets on tcpd.
#[derive(Debug, Parser)]
#[command(
    name = "tcpd-run",
    version,
    after_help = "IPv4 TCP sockets (AF_INET, SOCK_STREAM) go to tcpd, except those bound or \
                  connected to 127.0.0.0/8; everything else (UDP, Unix sockets, IPv6, files, \
                  DNS) stays on the kernel. See tcpd-run(1)."
)]
struct Args {
    /// The daemon's API socket (exported as TCPD_SOCKET; default: $TCPD_SOCKET, else
    /// /run/tcpd/tcpd.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The preload library to use instead of the one found next to tcpd-run or in the
    /// package's library directory.
    #[arg(long, value_name = "LIB")]
    preload: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(
        value_name = "PROGRAM",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        // exec only returns on failure.
        Ok(never) => match never {},
        Err(failure) => {
            eprintln!("tcpd-run: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Why tcpd-run did not start the program, and its exit code (126: found
/// but cannot run it this way; 127: not found — the shell's conventions).
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code,
    }
}

enum Never {}

fn run(args: Args) -> Result<Never, Failure> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| fail(2, "no program given"))?;
    let path = find_program(program).ok_or_else(|| {
        fail(
            127,
            format!("{}: command not found", program.to_string_lossy()),
        )
    })?;
    check_preloadable(&path, 0)?;
    let library = find_library(args.preload.as_deref())?;
    let socket = match args.socket {
        Some(socket) => socket,
        None => PathBuf::from(tcpd_proto::socket_path_from_env()),
    };
    if !socket.exists() {
        return Err(fail(
            1,
            format!(
                "no tcpd daemon socket at {} (start tcpd, or pass --socket PATH)",
                socket.display()
            ),
        ));
    }
    let mut command = Command::new(&path);
    command
        .arg0(program)
        .args(rest)
        .env(
            "LD_PRELOAD",
            ld_preload(std::env::var_os("LD_PRELOAD"), &library),
        )
        .env(tcpd_proto::SOCKET_ENV, &socket);
    let error = command.exec();
    Err(fail(126, format!("{}: {error}", path.display())))
}

/// `PROGRAM` as `execvp` would find it.
fn find_program(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// What the first bytes of an executable say about preloading.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// An ELF file with a program interpreter (the dynamic loader).
    Dynamic,
    /// An ELF file without one: nothing will read `LD_PRELOAD`.
    Static,
    /// `#!interpreter`: the interpreter is what runs.
    Script(PathBuf),
    /// Neither; leave it to `exec` to judge.
    Unknown,
}

/// Fails when the program cannot be preloaded into: a statically linked
/// ELF (directly or as a script's interpreter), or a set-user-ID program
/// the loader would run in secure mode (it ignores `LD_PRELOAD` paths then).
fn check_preloadable(path: &Path, depth: u32) -> Result<(), Failure> {
    let kind =
        classify(path).map_err(|e| fail(126, format!("{}: cannot read: {e}", path.display())))?;
    match kind {
        Kind::Dynamic | Kind::Unknown => {}
        Kind::Static => {
            return Err(fail(
                126,
                format!(
                    "{} is statically linked: it has no dynamic loader to read LD_PRELOAD, so \
                     tcpd-run cannot give it tcpd's sockets (use a dynamically linked build, or \
                     link it with libtcpd)",
                    path.display()
                ),
            ));
        }
        // Linux follows at most a few levels of interpreters; so do we.
        Kind::Script(interpreter) if depth < 4 => check_preloadable(&interpreter, depth + 1)?,
        Kind::Script(_) => {}
    }
    let meta = path
        .metadata()
        .map_err(|e| fail(126, format!("{}: {e}", path.display())))?;
    let setid = meta.mode() & (libc::S_ISUID | libc::S_ISGID) != 0;
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    if setid && meta.uid() != euid {
        return Err(fail(
            126,
            format!(
                "{} is set-user-ID or set-group-ID: the dynamic loader ignores LD_PRELOAD for it",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Reads the ELF header and program headers (or the `#!` line) of `path`.
fn classify(path: &Path) -> std::io::Result<Kind> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 256];
    let n = read_up_to(&mut file, &mut head)?;
    let head = &head[..n];
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        let interpreter = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|word| !word.is_empty())
            .unwrap_or_default();
        return Ok(if interpreter.is_empty() {
            Kind::Unknown
        } else {
            Kind::Script(PathBuf::from(OsString::from_vec(interpreter.to_vec())))
        });
    }
    let Some(elf) = Elf::parse_header(head) else {
        return Ok(Kind::Unknown);
    };
    let table_len = elf.phentsize as usize * elf.phnum as usize;
    if table_len > 1 << 20 {
        return Ok(Kind::Unknown);
    }
    let mut table = vec![0u8; table_len];
    file.seek(SeekFrom::Start(elf.phoff))?;
    if read_up_to(&mut file, &mut table)? < table_len {
        return Ok(Kind::Unknown);
    }
    Ok(if elf.has_interp(&table) {
        Kind::Dynamic
    } else {
        Kind::Static
    })
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The parts of an ELF header that locate the program headers.
#[derive(Debug)]
struct Elf {
    little: bool,
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

/// `PT_INTERP` (ELF gABI, program header `p_type`).
const PT_INTERP: u32 = 3;

impl Elf {
    /// Parses `e_ident`, `e_phoff`, `e_phentsize`, `e_phnum` (ELF gABI,
    /// "ELF Header"); `None` when `head` is not an ELF header.
    fn parse_header(head: &[u8]) -> Option<Elf> {
        if head.len() < 64 || head[..4] != *b"\x7fELF" {
            return None;
        }
        let wide = match head[4] {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = match head[5] {
            1 => true,
            2 => false,
            _ => return None,
        };
        let mut elf = Elf {
            little,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
        };
        // 32-bit: e_phoff at 28 (4 bytes), e_phentsize at 42, e_phnum at 44;
        // 64-bit: e_phoff at 32 (8 bytes), e_phentsize at 54, e_phnum at 56.
        let (phoff, phentsize, phnum) = if wide {
            (
                elf.u64_at(head, 32)?,
                elf.u16_at(head, 54)?,
                elf.u16_at(head, 56)?,
            )
        } else {
            (
                u64::from(elf.u32_at(head, 28)?),
                elf.u16_at(head, 42)?,
                elf.u16_at(head, 44)?,
            )
        };
        let min_entry = if wide { 56 } else { 32 };
        if usize::from(phentsize) < min_entry && phnum > 0 {
            return None;
        }
        elf.phoff = phoff;
        elf.phentsize = phentsize;
        elf.phnum = phnum;
        Some(elf)
    }

    /// Whether a program header of `table` is `PT_INTERP` (`p_type` is the
    /// first 4 bytes of each entry in both classes).
    fn has_interp(&self, table: &[u8]) -> bool {
        let entry = usize::from(self.phentsize);
        entry > 0
            && table
                .chunks_exact(entry)
                .any(|ph| self.u32_at(ph, 0) == Some(PT_INTERP))
    }

    fn bytes<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
        data.get(at..at + N)?.try_into().ok()
    }

    fn u16_at(&self, data: &[u8], at: usize) -> Option<u16> {
        let b = Self::bytes::<2>(data, at)?;
        Some(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }

    fn u32_at(&self, data: &[u8], at: usize) -> Option<u32> {
        let b = Self::bytes::<4>(data, at)?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn u64_at(&self, data: &[u8], at: usize) -> Option<u64> {
        let b = Self::bytes::<8>(data, at)?;
        Some(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }
}

/// The preload library: `--preload`, else next to this executable (a build
/// tree or a relocated install), else the package's library directory.
fn find_library(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(lib) = explicit {
        return std::fs::canonicalize(lib)
            .map_err(|e| fail(1, format!("--preload {}: {e}", lib.display())));
    }
    let exe = std::env::current_exe().map_err(|e| fail(1, format!("own path: {e}")))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let candidates = [
        dir.join(LIB_NAME),
        dir.join(CARGO_LIB_NAME),
        dir.join("../lib")
            .join(&multiarch)
            .join("tcpd")
            .join(LIB_NAME),
        dir.join("../lib/tcpd").join(LIB_NAME),
        Path::new("/usr/lib")
            .join(&multiarch)
            .join("tcpd")
            .join(LIB_NAME),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .and_then(|c| std::fs::canonicalize(c).ok())
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
            fail(
                1,
                format!(
                    "{LIB_NAME} not found (looked in {}); pass --preload LIB",
                    looked.join(", ")
                ),
            )
        })
}

/// `LD_PRELOAD` with `library` appended (once) to what was there.
fn ld_preload(existing: Option<OsString>, library: &Path) -> OsString {
    let library = library.as_os_str();
    let mut value = existing.unwrap_or_default();
    let already = value
        .as_bytes()
        .split(|&b| b == b':' || b == b' ')
        .any(|entry| entry == library.as_bytes());
    if already {
        return value;
    }
    if !value.is_empty() {
        value.push(":");
    }
    value.push(library);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_ld_preload_once() {
        let lib = Path::new("/x/libtcpd-preload.so");
        assert_eq!(
            ld_preload(None, lib),
            OsString::from("/x/libtcpd-preload.so")
        );
        assert_eq!(
            ld_preload(Some("/a.so".into()), lib),
            OsString::from("/a.so:/x/libtcpd-preload.so")
        );
        assert_eq!(
            ld_preload(Some("/a.so /x/libtcpd-preload.so".into()), lib),
            OsString::from("/a.so /x/libtcpd-preload.so")
        );
    }

    #[test]
    fn dynamic_executables_have_an_interpreter() {
        // This test binary is dynamically linked (Rust's default on glibc).
        let me = std::env::current_exe().unwrap();
        assert_eq!(classify(&me).unwrap(), Kind::Dynamic);
        // /bin/sh likewise; a script names its interpreter.
        assert_eq!(classify(Path::new("/bin/sh")).unwrap(), Kind::Dynamic);
    }

    #[test]
    fn scripts_and_garbage() {
        let dir = std::env::temp_dir().join(format!("tcpd-run-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s");
        std::fs::write(&script, "#!/bin/sh -e\necho hi\n").unwrap();
        assert_eq!(classify(&script).unwrap(), Kind::Script("/bin/sh".into()));
        let junk = dir.join("j");
        std::fs::write(&junk, b"\x7fELF\x02\x01garbage").unwrap();
        assert_eq!(classify(&junk).unwrap(), Kind::Unknown);
        // An ELF header with no program headers at all: static.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        std::fs::write(&junk, &elf).unwrap();
        assert_eq!(classify(&junk).unwrap(), Kind::Static);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
