//! One peer connection: the socket, its read buffer and the frame limit. Client and server both
//! use it; they only see typed messages.

use std::io;

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, FrameError};

/// Initial read buffer: heartbeats and votes are a few hundred bytes; a larger frame grows the
/// buffer to its size once its length prefix is read.
const READ_BUFFER: usize = 8 * 1024;

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the peer closed the connection")]
    Closed,
}

pub(super) struct Connection {
    stream: TcpStream,
    read: BytesMut,
    max_frame: usize,
}

impl Connection {
    pub(super) fn new(stream: TcpStream, max_frame: usize) -> Self {
        // Requests and answers are single small frames that someone waits for.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            read: BytesMut::with_capacity(READ_BUFFER),
            max_frame,
        }
    }

    /// Writes one message.
    pub(super) async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnError> {
        let frame = wire::encode(msg, self.max_frame)?;
        self.send_frame(&frame).await
    }

    /// Writes one frame made by [`wire::encode`].
    pub(super) async fn send_frame(&mut self, frame: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(frame).await?;
        Ok(())
    }

    /// Reads one message; `Ok(None)` when the peer closed the connection between messages.
    pub(super) async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnError> {
        loop {
            if let Some(msg) = wire::decode(&mut self.read, self.max_frame)? {
                return Ok(Some(msg));
            }
            if self.stream.read_buf(&mut self.read).await? == 0 {
                return if self.read.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::Closed)
                };
            }
        }
    }

    /// Like [`Self::recv`], but the peer closing is an error: an answer is owed.
    pub(super) async fn answer<T: DeserializeOwned>(&mut self) -> Result<T, ConnError> {
        self.recv().await?.ok_or(ConnError::Closed)
    }

    /// True when an idle connection can no longer be used: the peer closed it (it restarted, or
    /// dropped us), or sent something nobody asked for. Checked before reusing a pooled
    /// connection, so that a request is not lost on a socket that was dead all along.
    pub(super) fn is_stale(&self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut probe = [0u8; 1];
        !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}
