//! Request/response latency through tcpd: sends `COUNT` 1-byte requests to
//! an echo server and waits for each 1-byte answer, then prints the median
//! and 99th percentile round trip.
//!
//! ```text
//! cargo run --release --example request_response -- /run/tcpd/tcpd.sock 10.77.0.1:7 10000
//! ```

use std::time::{Duration, Instant};

use tcpd_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(socket), Some(peer)) = (args.next(), args.next()) else {
        return Err("usage: request_response SOCKET HOST:PORT [COUNT]".into());
    };
    let count: usize = args
        .next()
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(10_000);
    let client = Client::connect(&socket).await?;
    let mut stream = client.tcp_connect(peer.as_str()).await?;
    stream.set_nodelay(true)?;
    let mut times = Vec::with_capacity(count);
    let mut byte = [0u8; 1];
    for i in 0..count {
        let started = Instant::now();
        stream.write_all(&[i as u8]).await?;
        stream.read_exact(&mut byte).await?;
        times.push(started.elapsed());
    }
    stream.close().await?;
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let total: Duration = times.iter().sum();
    println!(
        "{count} round trips: p50 {:?}, p99 {:?}, {:.0}/s",
        at(0.5),
        at(0.99),
        count as f64 / total.as_secs_f64()
    );
    Ok(())
}
