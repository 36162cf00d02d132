//! A record of the frames a node writes, for tests and tools that must see the bytes a
//! client really sent (e.g. the CH-2 client's conformance tests).

use crate::table::lock;
use bytes::Bytes;
use std::sync::Mutex;

/// Frames written on every connection of a node, in the order they were queued.
#[derive(Default)]
pub struct WireLog {
    frames: Mutex<Vec<Bytes>>,
}

impl WireLog {
    pub fn frames(&self) -> Vec<Bytes> {
        lock(&self.frames).clone()
    }

    pub(crate) fn push(&self, frame: Bytes) {
        lock(&self.frames).push(frame);
    }
}
