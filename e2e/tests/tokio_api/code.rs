// Code written against `tokio::net`, included twice by `tokio_api.rs`: once
// after `use tokio::net::{...}`, once after `use tcpd_client::{...}`. It
// must compile unchanged against both (the `use` line is the only
// difference) — this file names neither crate.

/// An echo server on a listener made with `TcpSocket` (reuseaddr, bind,
/// listen): serves `connections` clients one after another, echoing with
/// borrowed halves (`split`) until each client half-closes.
pub async fn echo_server(addr: SocketAddr, connections: usize) -> io::Result<SocketAddr> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    assert!(socket.reuseaddr()?);
    socket.bind(addr)?;
    let listener: TcpListener = socket.listen(128)?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        for _ in 0..connections {
            let (mut stream, _peer): (TcpStream, SocketAddr) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (mut rd, mut wr) = stream.split();
            tokio::io::copy(&mut rd, &mut wr).await?;
            wr.shutdown().await?;
        }
        Ok::<_, io::Error>(())
    });
    Ok(local)
}

/// A client: connect, TCP_NODELAY, a `readable()` + `try_read` loop, then
/// `into_split` / `reunite` and a `try_write`/`writable()` loop, and the
/// half-close. Returns everything echoed back. `progress` says how far it
/// got (for the caller's timeout message).
pub async fn echo_client(
    addr: SocketAddr,
    msg: &[u8],
    progress: &std::sync::Mutex<String>,
) -> io::Result<Vec<u8>> {
    let step = |what: std::fmt::Arguments<'_>| {
        *progress.lock().unwrap_or_else(|e| e.into_inner()) = what.to_string();
    };
    step(format_args!("connect"));
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    assert!(stream.nodelay()?);
    assert_eq!(stream.peer_addr()?, addr);
    let _local: SocketAddr = stream.local_addr()?;

    // First half of the message with write_all, read back with try_read.
    let (first, second) = msg.split_at(msg.len() / 2);
    step(format_args!("write_all of {} bytes", first.len()));
    stream.write_all(first).await?;
    let mut echoed = Vec::new();
    let mut buf = [0u8; 4096];
    while echoed.len() < first.len() {
        step(format_args!("readable(), {} of {} bytes back", echoed.len(), first.len()));
        stream.readable().await?;
        match stream.try_read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => echoed.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }

    // Owned halves, put back together.
    let (rd, wr) = stream.into_split();
    let mut stream = rd.reunite(wr).map_err(|e| io::Error::other(e.to_string()))?;

    // Second half with try_write, waiting with writable().
    let mut rest = second;
    while !rest.is_empty() {
        step(format_args!("writable(), {} of {} bytes left", rest.len(), second.len()));
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    step(format_args!("ready()"));
    let ready = stream.ready(Interest::READABLE | Interest::WRITABLE).await?;
    assert!(ready.is_readable() || ready.is_writable());
    step(format_args!("shutdown()"));
    stream.shutdown().await?;
    step(format_args!("read_to_end after {} bytes back", echoed.len()));
    stream.read_to_end(&mut echoed).await?;
    step(format_args!("done, {} bytes back", echoed.len()));
    Ok(echoed)
}
