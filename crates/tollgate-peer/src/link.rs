//! One transport connection to a peer: frames in, a writer task out, the answers we wait for
//! on it and the requests it has in the application. A link knows nothing of the state
//! machine; the peer's driver ([`crate::driver`]) decides what it carries and when it goes.

use crate::framing::DiameterFramer;
use crate::table::{lock, Pending, Route};
use crate::wire::WireLog;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::task::TaskTracker;
use tollgate_codec::{ApplicationId, Message};

/// Any byte stream a Diameter connection can run over: TCP, TLS, or an in-memory pipe.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

pub type BoxedTransport = Box<dyn Transport>;

/// A connection: the frames read from it, and everything else.
pub(crate) struct Link {
    pub frames: FramedRead<ReadHalf<BoxedTransport>, DiameterFramer>,
    pub out: Outlet,
}

/// The part of a connection other tasks may hold while they wait (it is `Sync`, which the
/// read half of a `dyn` stream is not): the writer, the answers we wait for, the requests
/// in the application.
pub(crate) struct Outlet {
    pub id: u64,
    /// Where the connection goes to or came from, for logs.
    pub label: String,
    pub tx: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
    pub pending: Pending,
    /// Requests from the peer in the application at once (`max_in_flight_per_peer`).
    pub in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// Applications negotiated in the capabilities exchange (§5.3).
    pub common: Vec<ApplicationId>,
    /// The accepted connection's place under `max_connections`.
    _permit: Option<OwnedSemaphorePermit>,
}

/// How a link is set up.
pub(crate) struct LinkSetup<'a> {
    pub id: u64,
    pub label: String,
    pub max_message_len: u32,
    pub send_queue: usize,
    pub max_in_flight: usize,
    pub wire: Option<&'a Arc<WireLog>>,
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Link {
    pub fn new(stream: BoxedTransport, setup: LinkSetup<'_>) -> Link {
        let (read, write) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel(setup.send_queue);
        let writer = tokio::spawn(write_frames(write, rx, setup.wire.cloned()));
        let framer = DiameterFramer {
            max_message_len: setup.max_message_len,
        };
        Link {
            frames: FramedRead::new(read, framer),
            out: Outlet {
                id: setup.id,
                label: setup.label,
                tx,
                writer,
                pending: Pending::default(),
                in_flight: Arc::new(Semaphore::new(setup.max_in_flight)),
                max_in_flight: setup.max_in_flight,
                common: Vec::new(),
                _permit: setup.permit,
            },
        }
    }

    /// Closes the connection: stops reading now, then [`Outlet::close`].
    pub fn close(self, tracker: &TaskTracker) {
        drop(self.frames);
        self.out.close(tracker);
    }
}

impl Outlet {
    pub fn route(&self) -> Route {
        Route {
            tx: self.tx.clone(),
            pending: Arc::clone(&self.pending),
        }
    }

    /// Queues a message. A full queue waits (backpressure); a closed writer drops it, and
    /// the reader sees the connection end.
    pub async fn send(&self, m: &Message) {
        let _ = self.tx.send(m.to_bytes()).await;
    }

    /// Tells whoever waits for an answer on the connection that it is gone, lets the
    /// requests it has in the application write their answers, then flushes and shuts the
    /// writer (in the background, under `tracker`, so a node's shutdown waits for it).
    pub fn close(self, tracker: &TaskTracker) {
        let Outlet {
            tx,
            writer,
            pending,
            in_flight,
            max_in_flight,
            _permit,
            ..
        } = self;
        lock(&pending).clear();
        tracker.spawn(async move {
            let _ = in_flight.acquire_many(max_in_flight as u32).await;
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
            drop(_permit);
        });
    }
}

/// Writes queued frames, coalescing everything already queued into one write.
async fn write_frames<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Bytes>,
    wire: Option<Arc<WireLog>>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while let Some(first) = rx.recv().await {
        if let Some(log) = &wire {
            log.push(first.clone());
        }
        buf.extend_from_slice(&first);
        while buf.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(more) => {
                    if let Some(log) = &wire {
                        log.push(more.clone());
                    }
                    buf.extend_from_slice(&more)
                }
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}
