//! For the tests of the `redis` feature: a `redis-server` of their own
//! (started on 127.0.0.1 on a free port, persistence off, stopped when
//! dropped), and what they check grants with.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free port.
    ///
    /// Panics, saying what to install, when there is no `redis-server`.
    pub(crate) fn start() -> RedisServer {
        for _ in 0..20 {
            let port = free_port();
            if let Some(server) = RedisServer::start_on(port) {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts a server on `port`, or `None` if it did not come up.
    pub(crate) fn start_on(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run redis-server ({err}): the `redis` feature's tests need it \
                     (Debian: apt-get install redis-server)"
                )
            });
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if server.answers() {
                return Some(server);
            }
            let exited = server
                .child
                .as_mut()
                .is_some_and(|child| child.try_wait().ok().flatten().is_some());
            if exited {
                server.child = None;
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL to connect to it.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether it accepts connections and answers, as the process this
    /// server started: the port may have been taken meanwhile by another
    /// test's server, which must not be mistaken for this one.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let expected = format!("process_id:{pid}\r\n");
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        // Until the line is there, or the reply ends (a closed stream, the
        // read timeout) or is far longer than an INFO section.
        while reply.len() < 1 << 16 {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
            }
            if String::from_utf8_lossy(&reply).contains(&expected) {
                return true;
            }
        }
        false
    }

    /// Kills the server now (as a crash would) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts an empty server again on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if let Some(mut server) = RedisServer::start_on(self.port) {
                self.child = server.child.take();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    listener
        .local_addr()
        .expect("the listener's address")
        .port()
}

/// An instant of Redis's clock in microseconds since the Unix epoch.
pub(crate) fn micros(at: SystemTime) -> u64 {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_micros()).expect("fits in u64")
}

/// The most cost granted in any window `(t - window, t]`, over grants given
/// as (instant in µs, cost).
pub(crate) fn most_in_any_window(grants: &[(u64, u64)], window: u64) -> u64 {
    let mut sorted = grants.to_vec();
    sorted.sort_unstable();
    let mut most = 0;
    let mut start = 0;
    let mut inside = 0;
    for end in 0..sorted.len() {
        inside += sorted[end].1;
        while sorted[start].0 + window <= sorted[end].0 {
            inside -= sorted[start].1;
            start += 1;
        }
        most = most.max(inside);
    }
    most
}

/// A plain connection to the server, to look at (or tamper with) its keys.
pub(crate) async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("a valid URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connects to the test's redis-server")
}
