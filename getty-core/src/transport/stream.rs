//! Byte-stream transports (TCP, and TLS over TCP): a read half and a write half.

use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};

use crate::session::driver::{Input, Sink, Source};
use crate::session::{WriteKind, WriteReq};

pub(crate) struct StreamSource<R>(pub(crate) R);

/// Makes room for one big read, keeping what is buffered.
fn make_room(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> Source for StreamSource<R> {
    async fn read(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<Input> {
        make_room(buf, chunk);
        // `read_buf` is cancel-safe: no bytes are lost if the select! picks another branch.
        match self.0.read_buf(buf).await? {
            0 => Ok(Input::Eof),
            n => Ok(Input::Stream(n)),
        }
    }
}

/// Plain TCP: waits for readiness before taking a buffer, so an idle session holds none.
pub(crate) struct TcpSource(pub(crate) tokio::net::tcp::OwnedReadHalf);

impl Source for TcpSource {
    async fn read(&mut self, buf: &mut BytesMut, chunk: usize) -> io::Result<Input> {
        loop {
            // Both steps are cancel-safe: readiness takes nothing off the socket.
            self.0.readable().await?;
            make_room(buf, chunk);
            let room = buf.capacity() - buf.len();
            // A read that leaves room in the buffer has drained the socket. Telling `try_io`
            // "would block" clears the readiness now, instead of one more recv that only
            // returns EAGAIN: one syscall less per wake-up. Nothing is missed: epoll is
            // edge-triggered, and bytes that arrive later raise readiness again (tokio does
            // not clear a readiness newer than the one this read saw).
            let mut drained = None;
            let r = self.0.as_ref().try_io(Interest::READABLE, || {
                let n = self.0.try_read_buf(buf)?;
                if n > 0 && n < room {
                    drained = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (drained, r) {
                (Some(n), _) | (None, Ok(n)) if n > 0 => return Ok(Input::Stream(n)),
                (_, Ok(_)) => return Ok(Input::Eof),
                (_, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (_, Err(e)) => return Err(e),
            }
        }
    }
}

pub(crate) struct StreamSink<W> {
    w: W,
    /// Staging buffer for writers that cannot do vectored writes (TLS): one record, one syscall.
    scratch: BytesMut,
}

impl<W> StreamSink<W> {
    pub(crate) fn new(w: W) -> Self {
        StreamSink {
            w,
            scratch: BytesMut::new(),
        }
    }
}

fn chunks(batch: &[WriteReq]) -> impl Iterator<Item = &Bytes> {
    batch.iter().flat_map(|r| match &r.kind {
        WriteKind::One(b) => std::slice::from_ref(b),
        WriteKind::Parts(p) => p.as_slice(),
        WriteKind::Many(v) => v.as_slice(),
        WriteKind::Ping => &[],
    })
}

impl<W: AsyncWrite + Unpin + Send + 'static> Sink for StreamSink<W> {
    async fn write_batch(&mut self, batch: &[WriteReq]) -> io::Result<u64> {
        let total: usize = chunks(batch).map(Bytes::len).sum();
        if total == 0 {
            return Ok(0);
        }
        if let [one] = batch
            && let WriteKind::One(b) = &one.kind
        {
            // A lone frame: plain write, cheaper than writev.
            self.w.write_all(b).await?;
        } else if self.w.is_write_vectored() {
            let mut slices: Vec<IoSlice<'_>> = chunks(batch)
                .filter(|b| !b.is_empty())
                .map(|b| IoSlice::new(b))
                .collect();
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                let n = self.w.write_vectored(rest).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                IoSlice::advance_slices(&mut rest, n);
            }
        } else {
            self.scratch.clear();
            self.scratch.reserve(total);
            for b in chunks(batch) {
                self.scratch.extend_from_slice(b);
            }
            self.w.write_all(&self.scratch).await?;
            if self.scratch.capacity() > (4 << 20) {
                self.scratch = BytesMut::new();
            }
        }
        self.w.flush().await?;
        Ok(total as u64)
    }

    async fn shutdown(&mut self) {
        let _ = self.w.shutdown().await;
    }
}
