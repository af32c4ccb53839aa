//! Clients that try to hold the service's connection slots (issue 16): readers that
//! never read, idle sockets, one address opening every connection, endless pipelines,
//! trickled downloads. Each runs against the real binary on loopback with small limits,
//! and each failed on the code before connection hygiene (the probe went unanswered,
//! or the connection stayed open).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

const TOKEN: &str = "hostile-clients-token-0123456789";

/// A TCP connection to `addr` from `source` (any 127.0.0.0/8 address works on
/// Linux), optionally with a small receive buffer.
fn connect_from(source: &str, addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// `GET path` on a fresh connection; the status, or `None` if no answer came before
/// `deadline` (the connection may sit in the kernel's backlog until a slot frees).
fn status_before(addr: SocketAddr, path: &str, deadline: Instant) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    let left = deadline.checked_duration_since(Instant::now())?;
    stream.set_read_timeout(Some(left)).unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Reads until EOF or a reset; `Err` if the connection is still open at `deadline`.
fn closed_before(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(got);
        };
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(got)
            }
            Err(_) => return Ok(got), // reset
        }
    }
}

fn post_baseline(server: &Server, image_id: &str, entries: usize) -> Vec<u8> {
    let doc = baseline(image_id, entries);
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        post(server, "/baselines", &doc, &[("Authorization", &auth)]).status,
        201
    );
    doc
}

#[test]
fn readers_that_never_read_lose_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--token",
            TOKEN,
            "--max-connections",
            "4",
            "--max-connections-per-client",
            "0",
            "--write-timeout",
            "1",
            "--header-timeout",
            "60",
            "--idle-timeout",
            "60",
        ],
    );
    post_baseline(&server, "img-big", 5_000);
    // Four connections (every slot) each pipeline many GETs of an 800 KB body and
    // never read an answer: the service's writes stall at once.
    let request = b"GET /baselines/img-big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    let attackers: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect_from("127.0.0.1", server.addr, Some(4096));
            stream
                .set_write_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let _ = stream.write_all(&request);
            stream
        })
        .collect();
    // Every slot is taken now; a probe waits in the backlog until the write timeout
    // frees one (before: never, the writes waited forever).
    let deadline = Instant::now() + Duration::from_secs(15);
    assert_eq!(
        status_before(server.addr, "/healthz", deadline),
        Some(200),
        "/healthz unanswered while non-reading clients hold the slots\n{}",
        server.log()
    );
    drop(attackers);
}

#[test]
fn one_address_cannot_take_every_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--max-connections",
            "8",
            "--max-connections-per-client",
            "2",
            "--header-timeout",
            "60",
            "--idle-timeout",
            "60",
        ],
    );
    // 127.0.0.2 opens every slot's worth of idle connections; beyond two, each new one
    // is refused (the two it holds are not idle for a second yet) or closes its oldest
    // idle one.
    let mut hogs: Vec<TcpStream> = (0..8)
        .map(|_| connect_from("127.0.0.2", server.addr, None))
        .collect();
    // All but two are closed at once (the two kept stay open: 60 s timeouts).
    let mut closed = 0;
    for stream in &mut hogs {
        if closed_before(stream, Instant::now() + Duration::from_secs(2)).is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, 6, "connections closed of 8 from one address");
    // Another client is served at once.
    let probe_deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        status_before(server.addr, "/healthz", probe_deadline),
        Some(200)
    );
    let metrics = get(&server, "/metrics", &[]).text();
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        counter("metadata_service_connections_evicted_total")
            + counter("metadata_service_connections_refused_total"),
        6.0,
        "{metrics}"
    );
    drop(hogs);
}

#[test]
fn a_few_addresses_cannot_keep_everyone_else_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--max-connections",
            "4",
            "--max-connections-per-client",
            "2",
            "--header-timeout",
            "60",
            "--idle-timeout",
            "60",
        ],
    );
    // Two addresses hold every slot with connections that stay open (each within its
    // per-client cap, each kept alive by a request now and then).
    let mut holders = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3"] {
        for _ in 0..2 {
            let mut stream = connect_from(source, server.addr, None);
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).unwrap();
            holders.push(stream);
        }
    }
    // A client from a third address is served once one of them has been idle for a
    // second (before: it waited in the backlog for the 60 s idle timeout).
    let deadline = Instant::now() + Duration::from_secs(15);
    assert_eq!(
        status_before(server.addr, "/healthz", deadline),
        Some(200),
        "{}",
        server.log()
    );
    drop(holders);
}

#[test]
fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--idle-timeout", "1", "--header-timeout", "60"],
    );
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The answer, then nothing: the keep-alive connection is closed by the idle
    // timeout (before: it stayed open for the 60 s header timeout).
    let got = closed_before(&mut stream, Instant::now() + Duration::from_secs(10)).unwrap_or_else(
        |got| {
            panic!(
                "still open: {}\n{}",
                String::from_utf8_lossy(&got),
                server.log()
            )
        },
    );
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // A connection that never sends anything is closed too.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    assert!(closed_before(&mut silent, Instant::now() + Duration::from_secs(10)).is_ok());
}

#[test]
fn requests_per_connection_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &["--max-requests-per-connection", "3"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5))
        .unwrap();
    let got = closed_before(&mut stream, Instant::now() + Duration::from_secs(10))
        .unwrap_or_else(|got| panic!("still open: {}", String::from_utf8_lossy(&got)));
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let last = text
        .rsplit("HTTP/1.1 200")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(last.contains("connection: close"), "{text}");
}

#[test]
fn the_request_deadline_covers_writing_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--token",
            TOKEN,
            "--request-timeout",
            "2",
            "--write-timeout",
            "60",
            "--max-connections-per-client",
            "0",
        ],
    );
    let doc = post_baseline(&server, "img-trickle", 100_000);
    // A reader that takes 4 KB every 20 ms would need over a minute for the 19 MB
    // body; each read lets the service's write progress, so only the exchange
    // deadline stops it. After 5 s of that it reads as fast as it can: what is left
    // is what the kernel had buffered before the service gave up (at most a few MB),
    // then the end; before, the whole body.
    let mut stream = connect_from("127.0.0.1", server.addr, Some(4096));
    stream
        .write_all(b"GET /baselines/img-trickle HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let slow_until = Instant::now() + Duration::from_secs(5);
    let mut got = 0usize;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < slow_until {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        std::thread::sleep(Duration::from_millis(20)); // the slow reader's pace, not a wait for a condition
    }
    buf.resize(1 << 20, 0);
    let drained = closed_before(&mut stream, Instant::now() + Duration::from_secs(30))
        .expect("the connection ends");
    got += drained.len();
    assert!(
        got < doc.len(),
        "the whole body arrived ({got} bytes): the exchange deadline did not stop it"
    );
}
