//! The two tasks of a connection.
//!
//! The **session task** (this module's [`serve`]) reads, parses and hands frames to the
//! [`Session`]; it watches the CONNECT deadline, the heart-beat read deadline, broker
//! shutdown and the slow-consumer signal. The **writer task** drains the outbox, writes
//! everything queued per wake-up with one flush, reports what it wrote to the router's
//! [`Link`], and sends heart-beats when the connection has been write-silent for the
//! negotiated interval. A write that moves no byte for `write_timeout` ends the
//! connection (the timer restarts on every byte of progress). Keeping writes off the
//! read path means a peer that stops reading is caught by the writer while its ACKs
//! are still read.
//!
//! A frame that must wait for room (a SEND to a full queue or to full topic
//! subscribers, a COMMIT reserving queue room) does not stop the reader: ACK, NACK and
//! heart-beats are still handled, other frames are held behind it in order (up to
//! `limits.max_held_frames`), and receipts go out in frame order.
//!
//! Ending: the session task detaches its subscriptions first (so queue messages move
//! on to other consumers), queues the final ERROR or RECEIPT and a Close, then lingers —
//! reading and discarding — until the peer closes or `linger_ms` passes, so unread
//! input does not turn our close into a TCP reset that destroys the ERROR (E2). Once
//! the writer is done, dropping the session closes its link: every delivery not
//! settled goes back to its queue, marked redelivered if the client may have seen it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Flow, Session, SessionError, Shared, Waiting, heartbeat};
use crate::connections::Conn;
use crate::frame::{Command, Frame, FrameError, Inbound, Parser, Version};
use crate::metrics::{FrameCounts, Metrics};
use crate::outbox::{CloseReason, OutboxRx, Outgoing, outbox_charged};
use crate::router::Link;
use crate::transport::{Progress, ReadEvent, Sink, Source};

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

/// Where a connection came from.
#[derive(Debug)]
pub struct Accepted {
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// `tcp`, `tls`, `ws` or `wss`, for the connection list.
    pub transport: &'static str,
    /// The user its verified TLS client certificate names, if any.
    pub cert_user: Option<String>,
    /// Accepted by the admin listener: only admins may CONNECT.
    pub admins_only: bool,
}

/// Serves one connection until it ends. `cap` is the highest STOMP version the
/// transport allows (the WebSocket subprotocol; 1.2 on TCP).
///
/// A connection past `limits.max_connections_per_address` for its address gets ERROR
/// at once and is closed.
pub async fn serve(
    mut source: Source,
    sink: Sink,
    cap: Version,
    shared: Arc<Shared>,
    accepted: Accepted,
) {
    let Accepted {
        peer,
        transport,
        cert_user,
        admins_only,
    } = accepted;
    let config = &shared.config;
    let (tx, rx) = outbox_charged(
        config.outbox.max_frames,
        config.outbox.max_bytes,
        Some(shared.router.memory()),
    );
    let kill = CancellationToken::new();
    let stop_writer = CancellationToken::new();
    let id: Arc<str> = uuid::Uuid::new_v4().to_string().into();
    // Listed until this function returns, after the session is dropped.
    let registered = shared
        .connections
        .register(id.clone(), peer, transport, tx.clone());
    let link = Link::open(shared.router.clone());
    let writer = tokio::spawn(
        write_loop(
            sink,
            rx,
            link.handle(),
            config.write_timeout(),
            kill.clone(),
            stop_writer.clone(),
            Observers {
                metrics: shared.router.metrics().clone(),
                trace: Trace::new(&registered, config.admin.trace_body_bytes),
            },
        )
        .in_current_span(),
    );
    // However this task ends (a panic included), the writer stops and the session's
    // link closes, returning every unsettled delivery.
    let _stop_writer = stop_writer.clone().drop_guard();
    let mut session = Session::new(shared.clone(), id, link, cap, tx.clone(), kill.clone());
    session.peer = Some(peer.ip());
    session.cert_user = cert_user;
    session.admins_only = admins_only;
    session.conn = Some((*registered).clone());
    let mut buf = BytesMut::new();
    // Held for the whole connection: dropping it gives the address's slot back.
    let slot = shared.peers.connect(peer.ip());
    let end = match &slot {
        Ok(_) => read_loop(&mut session, &mut source, &mut buf, &shared, &kill).await,
        Err(limit) => End::error(
            format!("too many connections from your address (limit {limit})"),
            CloseReason::Policy,
        ),
    };

    // No more deliveries to this connection; what is unsettled is returned below, once
    // the writer is done, so nothing is both written here and redelivered elsewhere.
    session.stop_deliveries();
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
            // Nobody reads them now: they go back unwritten, not into a dead socket.
            tx.take_deliveries();
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
            Metrics::inc(&shared.router.metrics().errors[reason.metric_index()]);
            // The ERROR goes out next; deliveries queued before it go back unwritten.
            tx.take_deliveries();
            let frame = session.error_frame(&message, receipt, versions.as_deref());
            let _ = timeout_at(deadline, async {
                session.reply(frame).await;
                tx.push(Outgoing::Close(reason)).await;
            })
            .await;
            drain_input(&mut source, &mut buf, deadline).await;
        }
    }
    drop(tx);

    let mut writer = writer;
    if timeout_at(deadline, &mut writer).await.is_err() {
        stop_writer.cancel();
        let _ = writer.await;
    }
    // Closes the link: every delivery not settled goes back to its queue.
    drop(session);
    drop(registered);
}

/// Who watches what the writer writes: the broker's counters, and the connection's
/// frame trace.
struct Observers {
    metrics: Arc<Metrics>,
    trace: Trace,
}

/// Frame tracing of one connection, switched on and off by the admin API
/// (`Conn::trace`): every frame either way is logged at INFO (target
/// `stompbox::trace`), bodies cut to `admin.trace_body_bytes`.
#[derive(Clone)]
struct Trace {
    conn: Arc<Conn>,
    body_bytes: usize,
}

impl Trace {
    fn new(conn: &Arc<Conn>, body_bytes: usize) -> Trace {
        Trace {
            conn: conn.clone(),
            body_bytes,
        }
    }

    fn on(&self) -> bool {
        self.conn.tracing()
    }

    /// Logs a frame received.
    fn inbound(&self, frame: &Frame) {
        // A SEND to `/sys/auth` carries a token in its body; headers redact their own.
        let secret = frame.headers.get("destination") == Some("/sys/auth");
        let body: &[u8] = if secret {
            b"<redacted>"
        } else {
            &frame.body[..frame.body.len().min(self.body_bytes)]
        };
        tracing::info!(
            target: "stompbox::trace",
            direction = "in",
            command = frame.command.as_str(),
            headers = ?frame.headers,
            body = %String::from_utf8_lossy(body),
            body_len = frame.body.len(),
            "frame"
        );
    }

    /// Logs an item written: the frame's command line and headers as they went out,
    /// and the start of its body.
    fn outbound(&self, item: &Outgoing) {
        let (head, body): (Vec<&[u8]>, &[u8]) = match item {
            Outgoing::Frame(b) | Outgoing::Delivery(b, _) => {
                // Headers end at the blank line; a `passcode` never goes out.
                let split = memchr::memmem::find(b, b"\n\n").map_or(b.len(), |i| i + 1);
                (vec![&b[..split]], &b[split.min(b.len())..])
            }
            Outgoing::Message {
                head, tail, body, ..
            } => (vec![&head[..], &tail[..]], &body[..]),
            Outgoing::Heartbeat(_) | Outgoing::Close(_) => return,
        };
        let head: Vec<u8> = head.concat();
        let body = &body[..body.len().min(self.body_bytes)];
        tracing::info!(
            target: "stompbox::trace",
            direction = "out",
            head = %String::from_utf8_lossy(&head).trim_end(),
            body = %String::from_utf8_lossy(body).trim_end_matches('\0'),
            "frame"
        );
    }
}

/// The command of an item written, for the per-command counters.
fn command_of(item: &Outgoing) -> Option<Command> {
    match item {
        Outgoing::Frame(b) => {
            let line = b.split(|c| *c == b'\n').next()?;
            Command::from_bytes(line.strip_suffix(b"\r").unwrap_or(line))
        }
        Outgoing::Delivery(..) | Outgoing::Message { .. } => Some(Command::Message),
        Outgoing::Heartbeat(_) | Outgoing::Close(_) => None,
    }
}

/// A token bucket: `per_second` frames a second, up to a second's worth at once.
struct Bucket {
    per_second: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: u32, now: Instant) -> Bucket {
        Bucket {
            per_second,
            tokens: f64::from(per_second),
            at: now,
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.per_second);
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A frame read while an earlier one waits, or the receipt of an ACK that overtook it.
enum Held {
    Frame(Frame),
    Receipt(String),
}

/// The read side's state besides the socket: the parser, and the frames held in order
/// behind a frame that waits for room.
struct Reader {
    parser: Parser,
    held: VecDeque<Held>,
    /// Bytes of `held`, headers and bodies ([`Frame::size`]).
    held_bytes: usize,
    max_held_frames: usize,
    max_held_bytes: usize,
    /// `None` until CONNECT; then the client's promised interval, if any.
    recv_every: Option<Duration>,
    /// Frames (and heart-beats) parsed so far: when it moves, the partial frame in the
    /// buffer, if any, is a new one.
    parsed: u64,
    /// `limits.max_frames_per_second`, when set.
    rate: Option<Bucket>,
    connected: bool,
    /// Frames and bytes received since the last flush to the metrics.
    counts: FrameCounts,
    /// Frame tracing, when the connection is listed.
    trace: Option<Trace>,
}

impl Reader {
    /// Whether to read more input: not while a wait has a full backlog behind it.
    fn reading(&self, waiting: bool) -> bool {
        !waiting
            || (self.held.len() < self.max_held_frames && self.held_bytes < self.max_held_bytes)
    }

    /// Handles everything that can be handled now: held frames in order, then buffered
    /// input. While a frame waits, input is parsed into the backlog, except ACK and
    /// NACK, which are handled at once with their receipts kept in order.
    async fn pump(
        &mut self,
        session: &mut Session,
        buf: &mut BytesMut,
        waiting: &mut Option<Waiting>,
    ) -> Option<End> {
        loop {
            if waiting.is_some() {
                if !self.reading(true) {
                    return None;
                }
                let mut frame = match self.next_frame(buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return None,
                    Err(end) => return Some(end),
                };
                if Session::may_overtake(&frame) {
                    let receipt = frame.headers.get("receipt").map(str::to_owned);
                    frame.headers.retain(|k, _| k != "receipt");
                    if let Some(end) = self.handle(session, frame, receipt.clone(), waiting).await {
                        return Some(end);
                    }
                    self.held.extend(receipt.map(Held::Receipt));
                } else {
                    self.held_bytes += frame.size();
                    self.held.push_back(Held::Frame(frame));
                }
                continue;
            }
            let frame = match self.held.pop_front() {
                Some(Held::Receipt(id)) => {
                    // What the ACK settled is on disk first.
                    if let Err(e) = session.on_disk().await {
                        return Some(session_error(e, Some(id)));
                    }
                    session
                        .reply(Frame::new(Command::Receipt).header("receipt-id", id))
                        .await;
                    continue;
                }
                Some(Held::Frame(frame)) => {
                    self.held_bytes -= frame.size();
                    frame
                }
                None => match self.next_frame(buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return None,
                    Err(end) => return Some(end),
                },
            };
            let receipt = frame.headers.get("receipt").map(str::to_owned);
            if let Some(end) = self.handle(session, frame, receipt, waiting).await {
                return Some(end);
            }
        }
    }

    /// The next whole frame in `buf`, heart-beat EOLs skipped.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, End> {
        loop {
            match self.parser.parse(buf) {
                Ok(None) => return Ok(None),
                Ok(Some(Inbound::Heartbeat)) => self.parsed += 1,
                Ok(Some(Inbound::Frame(frame))) => {
                    self.parsed += 1;
                    self.counts.count(frame.command, frame.size());
                    if let Some(trace) = self.trace.as_ref().filter(|t| t.on()) {
                        trace.inbound(&frame);
                    }
                    if let Some(rate) = &mut self.rate
                        && !rate.take(Instant::now())
                    {
                        return Err(End::error(
                            format!("too many frames per second (limit {})", rate.per_second),
                            CloseReason::Policy,
                        ));
                    }
                    return Ok(Some(frame));
                }
                Err(e) => return Err(frame_error(e)),
            }
        }
    }

    /// One frame through the session; `receipt` is for the ERROR if it fails.
    async fn handle(
        &mut self,
        session: &mut Session,
        frame: Frame,
        receipt: Option<String>,
        waiting: &mut Option<Waiting>,
    ) -> Option<End> {
        // Awaited here, not inside `on_frame`: the per-frame future stays small.
        if session.waits_for_store()
            && let Err(e) = session.before_frame(&frame).await
        {
            return Some(session_error(e, receipt));
        }
        match session.on_frame(frame).await {
            Ok(flow) => self.flow(flow, waiting),
            Err(e) => Some(session_error(e, receipt)),
        }
    }

    fn flow(&mut self, flow: Flow, waiting: &mut Option<Waiting>) -> Option<End> {
        match flow {
            Flow::Continue | Flow::Deferred => None,
            Flow::Connected(version, negotiated) => {
                self.parser.set_version(version);
                self.recv_every = negotiated.recv;
                self.connected = true;
                None
            }
            Flow::Disconnect => Some(End::Disconnect),
            Flow::Wait(w) => {
                *waiting = Some(w);
                None
            }
        }
    }
}

fn session_error(e: SessionError, receipt: Option<String>) -> End {
    let versions = match &e {
        SessionError::UnsupportedVersion { supported } => Some(supported.clone()),
        _ => None,
    };
    End::Error {
        message: e.to_string(),
        reason: e.close_reason(),
        receipt,
        versions,
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
    let mut reader = Reader {
        parser: Parser::new(config.frame_limits()),
        held: VecDeque::new(),
        held_bytes: 0,
        max_held_frames: config.limits.max_held_frames,
        max_held_bytes: config.limits.max_body_bytes,
        recv_every: None,
        parsed: 0,
        rate: (config.limits.max_frames_per_second > 0)
            .then(|| Bucket::new(config.limits.max_frames_per_second, Instant::now())),
        connected: false,
        counts: FrameCounts::default(),
        trace: session
            .conn
            .as_ref()
            .map(|c| Trace::new(c, config.admin.trace_body_bytes)),
    };
    // Input read but not yet a whole frame is held for the client: charged to the
    // memory gauge, and it must become a frame within `limits.frame_timeout_ms`.
    let mut buffered = shared.router.memory().charge(0);
    let mut partial_since: Option<(Instant, u64)> = None;
    // One timer for the frame deadline, armed when a partial frame first needs it and
    // checked when it fires (then re-armed for the partial frame of the moment): under
    // a steady stream the deadline moves with every read, and a timer per read would
    // cost a timer-wheel registration per read.
    let frame_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(frame_timer);
    let mut frame_timer_armed = false;
    let mut waiting: Option<Waiting> = None;
    let memory = shared.router.memory().clone();
    let connect_deadline = Instant::now() + config.connect_timeout();
    let mut last_read = Instant::now();
    let closed_by_admin = session
        .conn
        .as_ref()
        .map_or_else(CancellationToken::new, |c| c.close.clone());
    loop {
        // Above the memory watermark a SEND still arriving is not read further: its
        // sender waits, as a SEND waits (up to `queues.send_timeout_ms`), and is then
        // refused. Other frames (ACKs that free memory) are small and go on.
        let memory_pause = memory.is_high() && partial_send(buf);
        let reading = reader.reading(waiting.is_some()) && !memory_pause;
        buffered.set(buf.len());
        partial_since = match partial_since {
            _ if buf.is_empty() => None,
            // A paused reader's partial frame waits for us: its clock starts again.
            Some((since, parsed)) if parsed == reader.parsed && reading => Some((since, parsed)),
            _ => Some((Instant::now(), reader.parsed)),
        };
        let frame_deadline = partial_since
            .filter(|_| reading && reader.connected)
            .map(|(since, _)| since + config.frame_timeout());
        if let (Some(at), false) = (frame_deadline, frame_timer_armed) {
            frame_timer.as_mut().reset(at);
            frame_timer_armed = true;
        }
        // While reading is paused, the client's silence is ours, not its.
        let deadline = if !reading {
            None
        } else if reader.connected {
            reader
                .recv_every
                .map(|every| heartbeat::deadline(last_read, every, config.heartbeat.grace))
        } else {
            Some(connect_deadline)
        };
        let token_deadline = session.token_deadline().map(Instant::from_std);
        let end = tokio::select! {
            done = async { waiting.as_mut().expect("checked").until.as_mut().await }, if waiting.is_some() => {
                let receipt = waiting.take().and_then(|w| w.receipt);
                last_read = Instant::now();
                let finished = match done {
                    Ok(done) => session.finish(done, receipt.clone()).await,
                    Err(e) => Err(e),
                };
                match finished {
                    Ok(flow) => match reader.flow(flow, &mut waiting) {
                        Some(end) => Some(end),
                        None => guarded(reader.pump(session, buf, &mut waiting), shared, kill).await,
                    },
                    Err(e) => Some(session_error(e, receipt)),
                }
            }
            event = source.read(buf), if reading => match event {
                ReadEvent::Data => {
                    let end = guarded(reader.pump(session, buf, &mut waiting), shared, kill).await;
                    // Time spent processing is ours, not the client's silence.
                    last_read = Instant::now();
                    // Nothing partial is buffered: let go of the read buffer, so an idle
                    // connection holds none (bodies still in flight keep their part).
                    if buf.is_empty() {
                        *buf = BytesMut::new();
                    }
                    end
                }
                ReadEvent::Closed => Some(End::PeerClosed),
                ReadEvent::Violation(reason, message) => Some(End::error(message, reason)),
            },
            _ = sleep_until(deadline.unwrap_or(last_read)), if deadline.is_some() => {
                Some(if reader.connected {
                    Metrics::inc(&shared.router.metrics().heartbeat_timeouts);
                    End::error("heart-beat timeout: nothing received from the client in time", CloseReason::GoingAway)
                } else {
                    End::error(
                        format!("no CONNECT frame within {} ms", config.limits.connect_timeout_ms),
                        CloseReason::Protocol,
                    )
                })
            }
            _ = &mut frame_timer, if frame_timer_armed => {
                frame_timer_armed = false;
                match frame_deadline {
                    Some(at) if Instant::now() >= at => Some(End::error(
                        format!("frame not completed within {} ms", config.limits.frame_timeout_ms),
                        CloseReason::Protocol,
                    )),
                    // Frames completed since it was armed: re-armed above.
                    _ => None,
                }
            }
            cleared = memory.wait_below(config.send_timeout()), if memory_pause => {
                if cleared {
                    None
                } else {
                    Some(End::error(
                        crate::router::RouteError::MemoryHigh.to_string(),
                        CloseReason::Policy,
                    ))
                }
            }
            _ = sleep_until(token_deadline.unwrap_or(last_read)), if token_deadline.is_some() => {
                Some(End::error("token expired", CloseReason::Policy))
            }
            _ = shared.shutdown.cancelled() => Some(shutting_down()),
            _ = kill.cancelled() => Some(slow_consumer()),
            _ = closed_by_admin.cancelled() => {
                Some(End::error("closed by an administrator", CloseReason::Policy))
            }
            e = session.store_failed() => Some(session_error(e, None)),
        };
        let metrics = shared.router.metrics();
        reader.counts.flush(&metrics.frames_in, &metrics.bytes_in);
        if let Some(end) = end {
            return end;
        }
    }
}

/// Whether `buf` holds the start of a SEND (after any heart-beat EOLs): the one frame
/// that carries a body, so the one whose partial bytes the memory alarm pauses.
fn partial_send(buf: &[u8]) -> bool {
    let start = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'));
    start.is_some_and(|i| {
        let rest = &buf[i..];
        rest.starts_with(b"SEND\n") || rest.starts_with(b"SEND\r\n")
    })
}

/// Runs frame handling (which may wait for outbox room for our own replies) so that
/// shutdown and the slow-consumer signal still end the connection meanwhile.
async fn guarded(
    work: impl Future<Output = Option<End>>,
    shared: &Shared,
    kill: &CancellationToken,
) -> Option<End> {
    tokio::select! {
        end = work => end,
        _ = shared.shutdown.cancelled() => Some(shutting_down()),
        _ = kill.cancelled() => Some(slow_consumer()),
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

/// The writer task. Reports every delivery it wrote (or may have written, when a write
/// fails midway) to the link; what it never wrote stays unwritten there and is
/// returned when the connection closes.
async fn write_loop(
    mut sink: Sink,
    mut rx: OutboxRx,
    link: Arc<Link>,
    write_timeout: Duration,
    kill: CancellationToken,
    stop: CancellationToken,
    observers: Observers,
) {
    let Observers { metrics, trace } = observers;
    // However the writer ends (a panic included), the session must not go on waiting
    // for a writer that is gone.
    let _end_session = kill.clone().drop_guard();
    let mut heartbeat: Option<Duration> = None;
    let mut last_write = Instant::now();
    // Everything queued is taken at once and written with one flush.
    let mut batch = VecDeque::new();
    let progress = sink.progress();
    let mut counts = FrameCounts::default();
    loop {
        counts.flush(&metrics.frames_out, &metrics.bytes_out);
        tokio::select! {
            () = rx.recv_batch(&mut batch) => {}
            _ = sleep_until(last_write + heartbeat.unwrap_or_default()), if heartbeat.is_some() => {
                let sent = progressing(&progress, write_timeout, async {
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
        let mut tickets = Vec::new();
        let tracing_on = trace.on();
        let write = async {
            for item in batch.iter() {
                if let Some(c) = command_of(item) {
                    counts.count(c, item.wire_len());
                }
                if tracing_on {
                    trace.outbound(item);
                }
                match item {
                    Outgoing::Frame(bytes) | Outgoing::Delivery(bytes, _) => {
                        sink.frame(bytes).await?
                    }
                    Outgoing::Message {
                        head,
                        tail,
                        body,
                        ticket,
                        ..
                    } => {
                        tickets.extend(*ticket);
                        sink.message(head, tail, body).await?;
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
            r = progressing(&progress, write_timeout, write) => r,
            _ = stop.cancelled() => Ok(Err(std::io::Error::other("stopped").into())),
        };
        batch.clear();
        let ok = match outcome {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::debug!(cause = %e, "write failed");
                false
            }
            Err(Stalled) => {
                tracing::info!(
                    timeout_ms = write_timeout.as_millis() as u64,
                    "slow consumer: the socket accepted no bytes for write_timeout_ms"
                );
                Metrics::inc(&metrics.slow_consumer_disconnects);
                false
            }
        };
        if !ok {
            link.maybe_written(&tickets);
            kill.cancel();
            break;
        }
        link.written(&tickets);
        rx.wake_if_drained();
        last_write = Instant::now();
        if let Some(reason) = close {
            let _ = progressing(&progress, write_timeout, sink.close(reason)).await;
            break;
        }
        if stop.is_cancelled() {
            break;
        }
    }
    rx.close_and_drain();
    // Nothing more is written: return every unsettled delivery now, before the peer
    // sees our side close, so that the next consumer finds them first in line.
    link.close();
}

/// A write that moved no byte for the whole write timeout.
struct Stalled;

/// Runs `write` until it completes, or until the socket has accepted no byte for
/// `timeout`: the timer restarts whenever a write makes progress. The byte count is
/// sampled every quarter of the timeout, so a stall is cut after between 1 and 1.25
/// times `timeout` without progress.
async fn progressing<T>(
    progress: &Progress,
    timeout: Duration,
    write: impl Future<Output = T>,
) -> Result<T, Stalled> {
    tokio::pin!(write);
    let tick = timeout / 4;
    let mut seen = progress.bytes();
    let mut moved_at = Instant::now();
    loop {
        tokio::select! {
            out = &mut write => return Ok(out),
            _ = sleep_until(Instant::now() + tick) => {
                let now = progress.bytes();
                if now != seen {
                    seen = now;
                    moved_at = Instant::now();
                } else if moved_at.elapsed() >= timeout {
                    return Err(Stalled);
                }
            }
        }
    }
}
