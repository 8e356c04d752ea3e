//! The two tasks of a connection.
//!
//! The **session task** (this module's [`serve`]) reads, parses and hands frames to the
//! [`Session`]; it watches the CONNECT deadline, the heart-beat read deadline, broker
//! shutdown and the slow-consumer signal. The **writer task** drains the outbox, writes
//! everything queued per wake-up with one flush under `write_timeout`, and sends
//! heart-beats when the connection has been write-silent for the negotiated interval.
//! Keeping writes off the read path means a peer that stops reading is caught by the
//! writer's deadline while its ACKs are still read.
//!
//! Ending: the session task unsubscribes first (so queue messages move on to other
//! consumers at once), queues the final ERROR or RECEIPT and a Close, then lingers —
//! reading and discarding — until the peer closes or `linger_ms` passes, so unread
//! input does not turn our close into a TCP reset that destroys the ERROR (E2).
//! Auto-ack deliveries still in the outbox at the end are requeued, not lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Flow, Session, Shared};
use crate::frame::{FrameError, Inbound, Parser, Version};
use crate::metrics::Metrics;
use crate::outbox::{CloseReason, OutboxRx, Outgoing, outbox};
use crate::transport::{ReadEvent, Sink, Source};

/// How the read loop ended.
enum End {
    /// EOF or a socket error: nobody to talk to.
    PeerClosed,
    /// DISCONNECT handled; its RECEIPT is already queued.
    Disconnect,
    /// Send ERROR with this `message` (and `receipt-id` / `version`), then close.
    Error {
        message: String,
        reason: CloseReason,
        receipt: Option<String>,
        versions: Option<String>,
    },
}

impl End {
    fn error(message: impl Into<String>, reason: CloseReason) -> End {
        End::Error {
            message: message.into(),
            reason,
            receipt: None,
            versions: None,
        }
    }
}

fn shutting_down() -> End {
    End::error("broker shutting down", CloseReason::GoingAway)
}

fn slow_consumer() -> End {
    End::error(
        "slow consumer: messages are arriving faster than this connection reads them",
        CloseReason::Policy,
    )
}

fn frame_error(e: FrameError) -> End {
    let reason = if e.is_too_large() {
        CloseReason::TooBig
    } else if e.is_invalid_utf8() {
        CloseReason::InvalidData
    } else {
        CloseReason::Protocol
    };
    End::error(e.to_string(), reason)
}

/// Serves one connection until it ends. `cap` is the highest STOMP version the
/// transport allows (the WebSocket subprotocol; 1.2 on TCP).
pub async fn serve(mut source: Source, sink: Sink, cap: Version, shared: Arc<Shared>) {
    let config = &shared.config;
    let (tx, rx) = outbox(config.outbox.max_frames, config.outbox.max_bytes);
    let kill = CancellationToken::new();
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(
        write_loop(
            sink,
            rx,
            config.write_timeout(),
            kill.clone(),
            stop_writer.clone(),
            shared.router.metrics().clone(),
        )
        .in_current_span(),
    );
    let mut session = Session::new(shared.clone(), cap, tx.clone(), kill.clone());
    let mut buf = BytesMut::new();
    let end = read_loop(&mut session, &mut source, &mut buf, &shared, &kill).await;

    session.cleanup();
    // One deadline for the whole goodbye (queue the last frames, drain input, let the
    // writer flush), so a connection ends within `linger_ms` — within `drain_ms` when
    // the broker is shutting down — however stuck its peer is.
    let linger = if shared.shutdown.is_cancelled() {
        config.linger().min(config.drain())
    } else {
        config.linger()
    };
    let deadline = Instant::now() + linger;
    match end {
        End::PeerClosed => {
            tracing::debug!("peer closed");
            let _ = tx.try_push(Outgoing::Close(CloseReason::Normal));
        }
        End::Disconnect => {
            tracing::debug!("disconnected");
            let _ = timeout_at(deadline, tx.push(Outgoing::Close(CloseReason::Normal))).await;
            drain_input(&mut source, &mut buf, deadline).await;
        }
        End::Error {
            message,
            reason,
            receipt,
            versions,
        } => {
            tracing::info!(error = %message, "closing connection with ERROR");
            if reason != CloseReason::GoingAway {
                Metrics::inc(&shared.router.metrics().protocol_errors);
            }
            let frame = session.error_frame(&message, receipt, versions.as_deref());
            let _ = timeout_at(deadline, async {
                session.reply(frame).await;
                tx.push(Outgoing::Close(reason)).await;
            })
            .await;
            drain_input(&mut source, &mut buf, deadline).await;
        }
    }
    drop(session);
    drop(tx);

    // Then stop the writer and requeue auto-ack deliveries it never wrote.
    let mut writer = writer;
    let joined = match timeout_at(deadline, &mut writer).await {
        Ok(joined) => joined,
        Err(_) => {
            stop_writer.cancel();
            writer.await
        }
    };
    if let Ok(mut rx) = joined {
        for item in rx.close_and_drain() {
            if let Outgoing::Message {
                auto: Some(auto), ..
            } = item
            {
                auto.unwritten();
            }
        }
    }
}

async fn read_loop(
    session: &mut Session,
    source: &mut Source,
    buf: &mut BytesMut,
    shared: &Shared,
    kill: &CancellationToken,
) -> End {
    let config = &shared.config;
    let mut parser = Parser::new(config.frame_limits());
    let connect_deadline = Instant::now() + config.connect_timeout();
    // `None` until CONNECT; then the client's promised interval, if any.
    let mut recv_every: Option<Duration> = None;
    let mut connected = false;
    let mut last_read = Instant::now();
    loop {
        let deadline = if connected {
            recv_every.map(|every| last_read + every.mul_f64(config.heartbeat.grace))
        } else {
            Some(connect_deadline)
        };
        tokio::select! {
            event = source.read(buf) => match event {
                ReadEvent::Data => {
                    loop {
                        let frame = match parser.parse(buf) {
                            Ok(None) => break,
                            Ok(Some(Inbound::Heartbeat)) => continue,
                            Ok(Some(Inbound::Frame(frame))) => frame,
                            Err(e) => return frame_error(e),
                        };
                        let receipt = frame.headers.get("receipt").map(str::to_owned);
                        // A frame may wait (a SEND to a full queue); shutdown and the
                        // slow-consumer signal still end the connection meanwhile.
                        let outcome = tokio::select! {
                            outcome = session.on_frame(frame) => outcome,
                            _ = shared.shutdown.cancelled() => return shutting_down(),
                            _ = kill.cancelled() => return slow_consumer(),
                        };
                        match outcome {
                            Ok(Flow::Continue) => {}
                            Ok(Flow::Connected(version, negotiated)) => {
                                parser.set_version(version);
                                recv_every = negotiated.recv;
                                connected = true;
                            }
                            Ok(Flow::Disconnect) => return End::Disconnect,
                            Err(e) => {
                                let versions = match &e {
                                    super::SessionError::UnsupportedVersion { supported } => Some(supported.clone()),
                                    _ => None,
                                };
                                return End::Error { message: e.to_string(), reason: e.close_reason(), receipt, versions };
                            }
                        }
                    }
                    // Time spent processing (waiting for queue room) is ours, not the
                    // client's silence; bytes it sent meanwhile are read next.
                    last_read = Instant::now();
                    // Nothing partial is buffered: let go of the read buffer, so an idle
                    // connection holds none (bodies still in flight keep their part).
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                }
                ReadEvent::Closed => return End::PeerClosed,
                ReadEvent::Violation(reason, message) => return End::error(message, reason),
            },
            _ = sleep_until(deadline.unwrap_or(last_read)), if deadline.is_some() => {
                return if connected {
                    End::error("heart-beat timeout: nothing received from the client in time", CloseReason::GoingAway)
                } else {
                    End::error(
                        format!("no CONNECT frame within {} ms", config.limits.connect_timeout_ms),
                        CloseReason::Protocol,
                    )
                };
            }
            _ = shared.shutdown.cancelled() => return shutting_down(),
            _ = kill.cancelled() => return slow_consumer(),
        }
    }
}

/// Reads and discards until the peer closes or the deadline passes.
async fn drain_input(source: &mut Source, buf: &mut BytesMut, deadline: Instant) {
    let _ = timeout_at(deadline, async {
        loop {
            buf.clear();
            if source.read(buf).await != ReadEvent::Data {
                return;
            }
        }
    })
    .await;
}

/// The writer task. Returns the outbox receiver so the caller can requeue what was
/// never written.
async fn write_loop(
    mut sink: Sink,
    mut rx: OutboxRx,
    write_timeout: Duration,
    kill: CancellationToken,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) -> OutboxRx {
    let mut heartbeat: Option<Duration> = None;
    let mut last_write = Instant::now();
    // Everything queued is taken at once and written with one flush.
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            () = rx.recv_batch(&mut batch) => {}
            _ = sleep_until(last_write + heartbeat.unwrap_or_default()), if heartbeat.is_some() => {
                let sent = timeout(write_timeout, async {
                    sink.heartbeat().await?;
                    sink.flush().await
                });
                if !matches!(sent.await, Ok(Ok(()))) {
                    kill.cancel();
                    break;
                }
                last_write = Instant::now();
                continue;
            }
            _ = stop.cancelled() => break,
        }
        let mut close = None;
        let mut written = Vec::new();
        let write = async {
            for item in batch.iter_mut() {
                match item {
                    Outgoing::Frame(bytes) => sink.frame(bytes, &Bytes::new()).await?,
                    Outgoing::Message { head, tail, auto } => {
                        sink.frame(head, tail).await?;
                        written.extend(auto.take());
                    }
                    Outgoing::Heartbeat(every) => heartbeat = Some(*every),
                    Outgoing::Close(reason) => {
                        close = Some(*reason);
                        break;
                    }
                }
            }
            sink.flush().await
        };
        let outcome = tokio::select! {
            r = timeout(write_timeout, write) => r,
            _ = stop.cancelled() => Ok(Err(std::io::Error::other("stopped").into())),
        };
        let ok = match outcome {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(cause = %e, "write failed");
                false
            }
            Err(_) => {
                tracing::info!("slow consumer: write made no progress within write_timeout_ms");
                Metrics::inc(&metrics.slow_consumer_disconnects);
                false
            }
        };
        if !ok {
            // Whatever was not confirmed written goes back to its queue.
            written
                .into_iter()
                .for_each(|a: crate::router::AutoAck| a.unwritten());
            for item in batch.drain(..) {
                if let Outgoing::Message { auto: Some(a), .. } = item {
                    a.unwritten();
                }
            }
            kill.cancel();
            break;
        }
        written.into_iter().for_each(|a| a.written());
        // Items after a Close never go out; their deliveries are requeued.
        for item in batch.drain(..) {
            if let Outgoing::Message { auto: Some(a), .. } = item {
                a.unwritten();
            }
        }
        rx.wake_if_drained();
        last_write = Instant::now();
        if let Some(reason) = close {
            let _ = timeout(write_timeout, sink.close(reason)).await;
            break;
        }
        if stop.is_cancelled() {
            break;
        }
    }
    rx
}
