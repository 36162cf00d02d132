//! The boundary between the peer layer and an application such as credit control: the peer
//! layer delivers validated, routed, de-duplicated requests and sends back the answers, and
//! knows nothing about what they mean.

use std::future::Future;
use std::pin::Pin;
use tollgate_codec::{ApplicationId, Message};

/// An answer being computed.
pub type AnswerFuture = Pin<Box<dyn Future<Output = Message> + Send + 'static>>;

/// A request as handed to the application.
#[derive(Clone, Debug)]
pub struct Request {
    pub message: Message,
    /// Origin-Host of the peer connection it arrived on (not necessarily the request's
    /// originator, when an agent relays it).
    pub peer: std::sync::Arc<str>,
}

/// A Diameter application served by this node.
pub trait Application: Send + Sync + 'static {
    /// Application ids advertised in CEA and accepted in requests (e.g. 4, credit control).
    fn application_ids(&self) -> Vec<ApplicationId>;
    /// Computes the answer. It must carry our Origin-Host and Origin-Realm and a Result-Code;
    /// the peer layer copies the identifiers and echoes Proxy-Info (RFC 6733 §6.2).
    fn handle(&self, request: Request) -> AnswerFuture;
}
