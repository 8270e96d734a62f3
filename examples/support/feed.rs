//! What the streaming examples share: `Market`, a `feed.PriceFeed` (from `proto/feed.proto`)
//! that either end of a connection can serve: prices on a random walk (`Watch`), uploads
//! checked by an FNV-1a checksum (`Upload`), and a chat that answers each line (`Chat`).
#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use getty::rpc::{Context, Prost, Receiver, RpcError, Sender};
use getty_proto::feed::{Chunk, Line, Price, PriceFeed, UploadSummary, WatchRequest};

/// FNV-1a over `data`, continuing from `h` (start with [`FNV_START`]).
pub fn fnv1a(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A market that quotes every `tick`.
pub struct Market {
    pub name: &'static str,
    pub tick: Duration,
}

impl PriceFeed for Market {
    async fn watch(
        &self,
        _ctx: Context,
        req: WatchRequest,
        mut out: Sender<Prost, Price>,
    ) -> Result<(), RpcError> {
        if req.symbols.is_empty() {
            return Err(RpcError::bad_request("no symbols to watch"));
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let mut prices: Vec<i64> = req.symbols.iter().map(|_| 100_000).collect();
        let mut seq = 0u64;
        while req.count == 0 || seq < req.count {
            let i = seq as usize % req.symbols.len();
            prices[i] = (prices[i] + rng.i64(-500..=500)).max(1);
            // Waits while the watcher has no credit left: a slow watcher slows the feed.
            out.send(&Price {
                symbol: req.symbols[i].clone(),
                milli: prices[i],
                seq,
            })
            .await?;
            seq += 1;
            if !self.tick.is_zero() {
                tokio::time::sleep(self.tick).await;
            }
        }
        Ok(())
    }

    async fn upload(
        &self,
        _ctx: Context,
        mut items: Receiver<Prost, Chunk>,
    ) -> Result<UploadSummary, RpcError> {
        let mut sum = UploadSummary {
            checksum: FNV_START,
            ..UploadSummary::default()
        };
        while let Some(chunk) = items.next().await {
            let chunk = chunk?;
            sum.name = chunk.name;
            sum.chunks += 1;
            sum.bytes += chunk.data.len() as u64;
            sum.checksum = fnv1a(sum.checksum, &chunk.data);
        }
        println!(
            "{}: received {:?}: {} chunks, {} bytes",
            self.name, sum.name, sum.chunks, sum.bytes
        );
        Ok(sum)
    }

    async fn chat(
        &self,
        _ctx: Context,
        mut items: Receiver<Prost, Line>,
        mut out: Sender<Prost, Line>,
    ) -> Result<(), RpcError> {
        while let Some(line) = items.next().await {
            let line = line?;
            out.send(&Line {
                who: self.name.to_string(),
                text: format!("heard {:?} from {}", line.text, line.who),
            })
            .await?;
        }
        Ok(())
    }
}

/// `123456` thousandths as `123.456`.
pub fn money(milli: i64) -> String {
    format!("{}.{:03}", milli / 1000, milli % 1000)
}
