//! A byte-counting TCP proxy on a free loopback port, in front of a moto server: every
//! byte sealpipe sends (requests) and receives (responses) passes through it and is
//! counted, independently of sealpipe's own counters. It also notes the HTTP request
//! lines and `x-amz-copy-source*` headers it sees go by, so a test can tell which S3
//! calls carried which conditions. On request it also holds back every request that
//! carries `x-amz-copy-source` (UploadPartCopy, CopyObject), so a test can catch a
//! multipart upload open. Threads only (std); stopped when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What went through the proxy.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Bytes from the client to the server (requests: headers and bodies).
    pub sent: u64,
    /// Bytes from the server to the client (responses: headers and bodies).
    pub received: u64,
    /// Client connections accepted.
    pub connections: u64,
    /// Request lines (`PUT /bucket/key?partNumber=2&uploadId=... HTTP/1.1`).
    pub requests: Vec<String>,
    /// `x-amz-copy-source*` header lines, lower-cased names.
    pub copy_headers: Vec<String>,
}

#[derive(Default)]
struct Counters {
    /// Copy requests are held while this is set.
    stall_copies: AtomicBool,
    /// Copy requests held now.
    stalled: AtomicU64,
    /// The proxy is stopping: held requests are dropped, not forwarded.
    stopping: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    connections: AtomicU64,
    requests: Mutex<Vec<String>>,
    copy_headers: Mutex<Vec<String>>,
}

pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    port: u16,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Starts forwarding connections on a free loopback port to `upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the counting proxy");
        let port = listener.local_addr().unwrap().port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                        // The client sees its connection closed, as with a dead server.
                        continue;
                    };
                    counters.connections.fetch_add(1, Relaxed);
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    relay(client, server, counters.clone());
                }
            })
        };
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            counters,
            stop,
            accept: Some(accept),
        }
    }

    /// Holds back (`true`) or lets through (`false`) every request that carries an
    /// `x-amz-copy-source` header from now on; held ones go on when let through, and
    /// are dropped if the proxy stops first.
    pub fn stall_copies(&self, stall: bool) {
        self.counters.stall_copies.store(stall, Relaxed);
    }

    /// Copy requests being held back now.
    pub fn stalled(&self) -> u64 {
        self.counters.stalled.load(Relaxed)
    }

    /// What went through so far.
    pub fn traffic(&self) -> Traffic {
        let c = &self.counters;
        Traffic {
            sent: c.sent.load(Relaxed),
            received: c.received.load(Relaxed),
            connections: c.connections.load(Relaxed),
            requests: c.requests.lock().unwrap().clone(),
            copy_headers: c.copy_headers.lock().unwrap().clone(),
        }
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        self.counters.stopping.store(true, Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Copies both directions of one connection on two threads, counting; when one side
/// ends its stream, the other side's write half is shut so it sees the end too.
fn relay(client: TcpStream, server: TcpStream, counters: Arc<Counters>) {
    let (client_r, server_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = counters.clone();
    std::thread::spawn(move || pump(client_r, server_w, &up, true));
    std::thread::spawn(move || pump(server, client, &counters, false));
}

fn pump(mut from: TcpStream, mut to: TcpStream, counters: &Counters, request_side: bool) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = LineScanner::default();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if request_side {
            counters.sent.fetch_add(n as u64, Relaxed);
            let copies = lines.feed(&buf[..n], counters);
            if copies && counters.stall_copies.load(Relaxed) {
                counters.stalled.fetch_add(1, Relaxed);
                while counters.stall_copies.load(Relaxed) && !counters.stopping.load(Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                counters.stalled.fetch_sub(1, Relaxed);
                if counters.stopping.load(Relaxed) {
                    break;
                }
            }
        } else {
            counters.received.fetch_add(n as u64, Relaxed);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Finds request lines and copy-source headers in a request stream (bodies included:
/// random ciphertext is vanishingly unlikely to hold a line that looks like either).
#[derive(Default)]
struct LineScanner {
    line: Vec<u8>,
    overflow: bool,
}

const LONGEST_LINE: usize = 8192;
const METHODS: [&str; 5] = ["GET ", "PUT ", "POST ", "HEAD ", "DELETE "];

impl LineScanner {
    /// Scans `bytes`; whether they ended an `x-amz-copy-source:` header line.
    fn feed(&mut self, mut bytes: &[u8], counters: &Counters) -> bool {
        let mut copy_source = false;
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.push(&bytes[..end]);
            copy_source |= self.finish_line(counters);
            bytes = &bytes[end + 1..];
        }
        self.push(bytes);
        copy_source
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > LONGEST_LINE {
            self.overflow = true;
        } else if !self.overflow {
            self.line.extend_from_slice(bytes);
        }
    }

    /// Records the line if it is one worth noting; whether it is `x-amz-copy-source:`.
    fn finish_line(&mut self, counters: &Counters) -> bool {
        let mut copy_source = false;
        if !self.overflow
            && let Ok(line) = std::str::from_utf8(&self.line)
        {
            let line = line.trim_end_matches('\r');
            if METHODS.iter().any(|m| line.starts_with(m)) && line.ends_with(" HTTP/1.1") {
                counters.requests.lock().unwrap().push(line.to_string());
            } else if line.to_ascii_lowercase().starts_with("x-amz-copy-source") {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                copy_source = name.eq_ignore_ascii_case("x-amz-copy-source");
                counters.copy_headers.lock().unwrap().push(format!(
                    "{}: {}",
                    name.to_ascii_lowercase(),
                    value.trim()
                ));
            }
        }
        self.line.clear();
        self.overflow = false;
        copy_source
    }
}
