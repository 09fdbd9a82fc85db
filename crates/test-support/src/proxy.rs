//! A TCP proxy that can cut the line: put it between a service and MySQL, Redis or RabbitMQ to
//! simulate an outage without touching the shared servers.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A proxy listening on `127.0.0.1:<random port>` and forwarding to `target`.
pub struct FaultProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut, so that open connections close.
    generation: watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: impl Into<String>) -> std::io::Result<FaultProxy> {
        let target = target.into();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let accept_task = tokio::spawn(accept_loop(listener, target, up.clone(), generation.clone()));
        Ok(FaultProxy { addr, up, generation, accept_task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Cuts every open connection and refuses new ones until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        if !up.load(Ordering::SeqCst) {
            // Accept and close at once: the client sees its connection reset, as with a dead server.
            drop(inbound);
            continue;
        }
        let target = target.clone();
        let mut cut = generation.subscribe();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
