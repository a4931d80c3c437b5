//! A TCP proxy a test can cut, to take a real store away from the services
//! and give it back, as an outage would; or pause, to make the store stop
//! answering while every connection stays open, as a network partition, a
//! frozen host or a failover behind a load balancer would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `upstream` until cut or paused.
pub struct TcpProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    /// While true, bytes are read but held, both ways, and sockets stay
    /// open: nothing is refused, reset or closed, nothing arrives.
    paused: watch::Sender<bool>,
}

impl TcpProxy {
    /// Starts forwarding a fresh loopback port to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let (paused, _) = watch::channel(false);
        let accept_down = down.clone();
        let accept_cut = cut.clone();
        let accept_paused = paused.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if accept_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let mut cut = accept_cut.subscribe();
                let paused = accept_paused.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (inbound_read, inbound_write) = inbound.into_split();
                    let (outbound_read, outbound_write) = outbound.into_split();
                    tokio::select! {
                        () = forward(inbound_read, outbound_write, paused.clone()) => {}
                        () = forward(outbound_read, inbound_write, paused) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            down,
            cut,
            paused,
        }
    }

    /// Where the services should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Stops delivering bytes either way, on open connections and new ones
    /// alike, while keeping every socket open: a partition, which neither
    /// side can tell from a slow peer.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Delivers what was held, and everything after it.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

/// Copies `from` to `to` until either side closes, holding each chunk read
/// while the proxy is paused.
async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut paused: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if paused.wait_for(|paused| !*paused).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
