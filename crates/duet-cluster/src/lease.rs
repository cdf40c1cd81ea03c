//! Witness leases and terms: the witness side ([`Witness`]) and the node side
//! ([`LeaseClient`]).
//!
//! The witness grants one time-bounded lease at a time. A lease carries a term (fencing token)
//! that rises with every new holder; a request with a stale term is refused and told the
//! current one. The witness persists what it promised before it answers, and after a restart
//! refuses everyone until any lease it may have granted has run out.
//!
//! The node counts its lease from the moment it *sent* the request (the witness counts from
//! receipt, which is later) minus a safety margin, so the node always believes its lease ends
//! before the witness does, whatever the network delay. Renewal starts at a fifth of the
//! lease; an unanswered request is repeated every fortieth.

use std::time::Duration;

use duet_time::Instant;

use crate::wire::DbRecord;

/// A lease the witness granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The holder's node name.
    pub holder: String,
    /// Its term.
    pub term: u64,
    /// When it ends (the witness's clock).
    pub expires: Instant,
}

/// The witness's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The lease is the requester's for `duration` from now, under `term`.
    Granted {
        /// Length.
        duration: Duration,
        /// The term it holds.
        term: u64,
    },
    /// Someone else holds it, or the requester's term is stale.
    Refused {
        /// The holder (empty when the witness waits out an unknown lease after a restart).
        holder: String,
        /// How long the current lease still runs (0 for a stale term).
        remaining: Duration,
        /// The highest term the witness knows: ask again with a larger one.
        term: u64,
    },
}

impl Answer {
    /// The term the answer carries.
    pub fn term(&self) -> u64 {
        match self {
            Answer::Granted { term, .. } | Answer::Refused { term, .. } => *term,
        }
    }

    /// The message body answering `request`.
    pub fn body(&self, request: u64) -> crate::wire::Body {
        let ms = |d: &Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        match self {
            Answer::Granted { duration, .. } => crate::wire::Body::LeaseGranted {
                request,
                duration_ms: ms(duration),
            },
            Answer::Refused {
                holder, remaining, ..
            } => crate::wire::Body::LeaseRefused {
                request,
                holder: holder.clone(),
                remaining_ms: ms(remaining),
            },
        }
    }
}

/// What the witness must write to stable storage before answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    /// Highest term ever granted.
    pub max_term: u64,
    /// The holder of the latest grant.
    pub holder: String,
    /// The longest lease it grants.
    pub duration: Duration,
    /// The database record it keeps.
    pub record: Option<DbRecord>,
}

/// The witness's decision logic.
#[derive(Debug, Clone)]
pub struct Witness {
    lease: Option<Grant>,
    max_term: u64,
    max_duration: Duration,
    /// After a restart: nobody gets a lease before this.
    quiet_until: Option<Instant>,
    /// The database record (see [`Witness::write_record`]).
    record: Option<DbRecord>,
}

impl Witness {
    /// A witness granting leases of at most `max_duration`. `restored` is the promise it
    /// persisted before a restart: then any lease it may have granted is waited out.
    pub fn new(now: Instant, max_duration: Duration, restored: Option<&Promise>) -> Witness {
        Witness {
            lease: None,
            max_term: restored.map_or(0, |p| p.max_term),
            max_duration,
            quiet_until: restored.map(|p| now + p.duration.max(max_duration)),
            record: restored.and_then(|p| p.record.clone()),
        }
    }

    /// The current lease, if any and unexpired.
    pub fn lease(&self, now: Instant) -> Option<&Grant> {
        self.lease.as_ref().filter(|g| now < g.expires)
    }

    /// Highest term granted.
    pub fn max_term(&self) -> u64 {
        self.max_term
    }

    /// Decides on a request from `from` holding or asking for `term`, for `duration` (capped).
    /// When the answer is a grant, the returned promise must be persisted before replying.
    pub fn request(
        &mut self,
        now: Instant,
        from: &str,
        term: u64,
        duration: Duration,
    ) -> (Answer, Option<Promise>) {
        let duration = duration.min(self.max_duration);
        if let Some(until) = self.quiet_until {
            if now < until {
                return (
                    Answer::Refused {
                        holder: String::new(),
                        remaining: until.saturating_since(now),
                        term: self.max_term,
                    },
                    None,
                );
            }
            self.quiet_until = None;
        }
        let renewal = match self.lease(now) {
            Some(g) if g.holder != from => {
                return (
                    Answer::Refused {
                        holder: g.holder.clone(),
                        remaining: g.expires.saturating_since(now),
                        term: self.max_term,
                    },
                    None,
                );
            }
            Some(g) => term == g.term,
            None => false,
        };
        // A new lease needs a term above every term granted; a renewal keeps its own. The
        // holder of a lease that just expired must also move on: someone else may have been
        // refused meanwhile and be about to ask with the next term.
        if !renewal && term <= self.max_term {
            return (
                Answer::Refused {
                    holder: self.lease(now).map_or(String::new(), |g| g.holder.clone()),
                    remaining: Duration::ZERO,
                    term: self.max_term,
                },
                None,
            );
        }
        self.max_term = self.max_term.max(term);
        self.lease = Some(Grant {
            holder: from.to_string(),
            term,
            expires: now + duration,
        });
        let promise = Promise {
            max_term: self.max_term,
            holder: from.to_string(),
            duration: self.max_duration,
            record: self.record.clone(),
        };
        (Answer::Granted { duration, term }, Some(promise))
    }

    /// The database record.
    pub fn record(&self) -> Option<&DbRecord> {
        self.record.as_ref()
    }

    /// Keeps `record` if `from` holds the lease now under `term`, and the record says that
    /// term: only the current holder may change it, so a node that lost its lease (frozen,
    /// partitioned) cannot overwrite what its successor wrote. The returned promise must be
    /// persisted before the answer; on refusal, why.
    pub fn write_record(
        &mut self,
        now: Instant,
        from: &str,
        term: u64,
        record: DbRecord,
    ) -> Result<Promise, &'static str> {
        let g = self.lease(now).ok_or("no lease is held")?;
        if g.holder != from {
            return Err("the writer does not hold the lease");
        }
        if g.term != term || record.term != term {
            return Err("the record's term is not the lease's");
        }
        self.record = Some(record);
        Ok(Promise {
            max_term: self.max_term,
            holder: from.to_string(),
            duration: self.max_duration,
            record: self.record.clone(),
        })
    }
}

/// The node's view of its lease.
#[derive(Debug, Clone)]
pub struct LeaseClient {
    duration: Duration,
    margin: Duration,
    wanted: bool,
    /// Term to ask with.
    term: u64,
    /// Valid (in our clock) until.
    valid_until: Option<Instant>,
    /// Outstanding request: id, when sent, term.
    pending: Option<(u64, Instant, u64)>,
    next_request_id: u64,
    next_send: Option<Instant>,
    /// A lease given up while valid: tell the witness (a zero-length renewal), so the next
    /// holder need not wait for it to run out.
    release: Option<u64>,
}

/// A request for the shell to send to the witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    /// Request id (echoed in the answer).
    pub request: u64,
    /// Term asked for or held.
    pub term: u64,
    /// Length asked for.
    pub duration: Duration,
}

impl LeaseClient {
    /// Leases of `duration`; the node believes a lease ends `margin` before its own count
    /// does (covers clock-rate differences). `margin` should be well below `duration / 3`.
    pub fn new(duration: Duration, margin: Duration) -> LeaseClient {
        LeaseClient {
            duration,
            margin,
            wanted: false,
            term: 0,
            valid_until: None,
            pending: None,
            next_request_id: 1,
            next_send: None,
            release: None,
        }
    }

    /// Whether this node wants the lease (it is, or wants to become, master). Not wanting it
    /// stops renewals; the lease then runs out at the witness.
    pub fn set_wanted(&mut self, now: Instant, wanted: bool) {
        if wanted && !self.wanted {
            self.next_send = Some(now);
        }
        if !wanted {
            if self.wanted && self.valid(now) {
                self.release = Some(self.term);
            }
            self.next_send = None;
            self.pending = None;
            self.valid_until = None;
        }
        self.wanted = wanted;
    }

    /// Whether the lease is valid now, in this node's conservative view.
    pub fn valid(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|t| now < t)
    }

    /// The lease's end in this node's view.
    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until.filter(|_| self.wanted)
    }

    /// The term this node holds (valid lease) or last learned.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Learns a term seen elsewhere (a peer's heartbeat): the next new lease asks above it.
    pub fn observe_term(&mut self, term: u64) {
        if term > self.term && !self.valid_until.is_some_and(|_| self.wanted) {
            self.term = term;
        }
    }

    /// A request to send now, if one is due.
    pub fn poll_request(&mut self, now: Instant) -> Option<LeaseRequest> {
        if let Some(term) = self.release.take() {
            let request = self.next_request_id;
            self.next_request_id += 1;
            return Some(LeaseRequest {
                request,
                term,
                duration: Duration::ZERO,
            });
        }
        let due = self.wanted && self.next_send.is_some_and(|t| now >= t);
        if !due {
            return None;
        }
        // Holding a lease: renew under its term. Else ask for a new one above what we know.
        let term = if self.valid(now) {
            self.term
        } else {
            self.term + 1
        };
        let request = self.next_request_id;
        self.next_request_id += 1;
        self.pending = Some((request, now, term));
        // Unanswered, ask again soon: a lost renewal must be retried while the lease still
        // outlasts the VIP lifetime. An answer moves this to the next renewal.
        self.next_send = Some(now + self.retry_interval());
        Some(LeaseRequest {
            request,
            term,
            duration: self.duration,
        })
    }

    fn retry_interval(&self) -> Duration {
        (self.duration / 40).max(Duration::from_millis(20))
    }

    /// Forgets a lease whose validity has ended, so [`LeaseClient::poll_timeout`] moves on.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.valid_until.is_some_and(|t| t <= now) {
            self.valid_until = None;
        }
    }

    /// When [`LeaseClient::poll_request`] has something next, or validity ends. Call
    /// [`LeaseClient::handle_timeout`] at that time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.release.is_some() {
            return Some(Instant::ZERO);
        }
        [self.next_send, self.valid_until.filter(|_| self.wanted)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The witness granted `request` for `duration` under `term`.
    pub fn granted(&mut self, request: u64, duration: Duration, term: u64) {
        let Some((id, sent, asked)) = self.pending else {
            return;
        };
        // The witness grants the term asked; etcd grants its own (the leadership key's
        // revision), never below a term this node has seen.
        if id != request || term < asked || !self.wanted {
            return;
        }
        self.pending = None;
        self.term = term;
        // Renew at a fifth of the lease: with retries every fortieth, lost packets cost
        // nothing unless about ten in a row are lost.
        self.next_send = Some(sent + self.duration / 5);
        let until = sent + duration.saturating_sub(self.margin);
        self.valid_until = Some(self.valid_until.map_or(until, |t| t.max(until)));
    }

    /// The witness refused `request`; `term` is the highest it knows.
    pub fn refused(&mut self, now: Instant, request: u64, term: u64, remaining: Duration) {
        if self.pending.is_some_and(|(id, _, _)| id == request) {
            self.pending = None;
        }
        if term > self.term {
            self.term = term;
        }
        // Ask again soon after the holder's lease would end, and at least every third of a
        // lease.
        if self.wanted {
            self.next_send = Some(now + remaining.min(self.duration / 3));
        }
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    fn rec(primary: &str, standby: &str, term: u64) -> DbRecord {
        DbRecord {
            system_id: 1,
            primary: primary.into(),
            standby: standby.into(),
            term,
        }
    }

    #[test]
    fn only_the_holder_writes_the_record_under_its_term_and_it_survives_a_restart() {
        let two = Duration::from_secs(2);
        let mut w = Witness::new(ms(0), two, None);
        assert_eq!(
            w.write_record(ms(0), "alpha", 1, rec("alpha", "", 1)),
            Err("no lease is held")
        );
        w.request(ms(0), "alpha", 1, two);
        assert_eq!(
            w.write_record(ms(1), "beta", 1, rec("beta", "", 1)),
            Err("the writer does not hold the lease")
        );
        assert_eq!(
            w.write_record(ms(1), "alpha", 1, rec("alpha", "", 0)),
            Err("the record's term is not the lease's")
        );
        let p = w
            .write_record(ms(1), "alpha", 1, rec("alpha", "beta", 1))
            .expect("the holder writes");
        assert_eq!(p.record, Some(rec("alpha", "beta", 1)));
        // alpha's lease runs out (frozen); beta takes over and rewrites; alpha cannot undo it.
        w.request(ms(2_500), "beta", 2, two);
        w.write_record(ms(2_501), "beta", 2, rec("beta", "", 2))
            .unwrap();
        assert!(
            w.write_record(ms(2_502), "alpha", 1, rec("alpha", "beta", 1))
                .is_err()
        );
        // Grants carry the record into the promise; a restarted witness keeps it.
        let (_, p) = w.request(ms(2_600), "beta", 2, two);
        let p = p.expect("a renewal persists");
        let w2 = Witness::new(ms(0), two, Some(&p));
        assert_eq!(w2.record(), Some(&rec("beta", "", 2)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }
    const TWO: Duration = Duration::from_secs(2);

    #[test]
    fn a_grant_under_a_higher_term_counts_and_a_lower_one_does_not() {
        let mut c = LeaseClient::new(Duration::from_secs(3), Duration::from_millis(100));
        c.observe_term(41);
        c.set_wanted(ms(0), true);
        let r = c.poll_request(ms(0)).unwrap();
        assert_eq!(r.term, 42);
        // Below what was asked: a stale answer.
        c.granted(r.request, Duration::from_secs(3), 40);
        assert!(!c.valid(ms(1)));
        // etcd answers with its own revision, above the ask.
        c.granted(r.request, Duration::from_secs(3), 57);
        assert!(c.valid(ms(1)));
        assert_eq!(c.term(), 57);
        // Renewals ask under the term held.
        let r = c.poll_request(ms(1000)).unwrap();
        assert_eq!(r.term, 57);
    }

    #[test]
    fn one_holder_at_a_time_and_terms_rise() {
        let mut w = Witness::new(ms(0), TWO, None);
        let (a, p) = w.request(ms(0), "alpha", 1, TWO);
        assert_eq!(
            a,
            Answer::Granted {
                duration: TWO,
                term: 1
            }
        );
        assert_eq!(p.unwrap().max_term, 1);
        // beta is refused while alpha's lease runs, and told who holds it for how long.
        let (b, p) = w.request(ms(500), "beta", 2, TWO);
        assert_eq!(
            b,
            Answer::Refused {
                holder: "alpha".into(),
                remaining: Duration::from_millis(1500),
                term: 1
            }
        );
        assert!(p.is_none());
        // alpha renews under its term.
        assert!(matches!(
            w.request(ms(600), "alpha", 1, TWO).0,
            Answer::Granted { term: 1, .. }
        ));
        // alpha stops renewing: after expiry beta gets it with a higher term only.
        let stale = w.request(ms(2700), "beta", 1, TWO).0;
        assert!(
            matches!(stale, Answer::Refused { term: 1, .. }),
            "{stale:?}"
        );
        assert!(matches!(
            w.request(ms(2700), "beta", 2, TWO).0,
            Answer::Granted { term: 2, .. }
        ));
        // alpha comes back with its old term: refused (fencing).
        assert!(matches!(
            w.request(ms(2800), "alpha", 1, TWO).0,
            Answer::Refused { .. }
        ));
        assert!(
            matches!(
                w.request(ms(2800), "alpha", 3, TWO).0,
                Answer::Refused { .. }
            ),
            "beta holds it"
        );
    }

    #[test]
    fn a_restarted_witness_waits_out_what_it_may_have_promised() {
        let promise = Promise {
            max_term: 7,
            holder: "alpha".into(),
            duration: TWO,
            record: None,
        };
        let mut w = Witness::new(ms(10_000), TWO, Some(&promise));
        assert!(matches!(
            w.request(ms(10_100), "beta", 8, TWO).0,
            Answer::Refused { term: 7, .. }
        ));
        assert!(matches!(
            w.request(ms(11_900), "alpha", 8, TWO).0,
            Answer::Refused { .. }
        ));
        assert!(matches!(
            w.request(ms(12_000), "beta", 8, TWO).0,
            Answer::Granted { term: 8, .. }
        ));
    }

    #[test]
    fn the_node_counts_from_sending_and_ends_before_the_witness() {
        let margin = Duration::from_millis(100);
        let mut c = LeaseClient::new(TWO, margin);
        let mut w = Witness::new(ms(0), TWO, None);
        c.set_wanted(ms(0), true);
        let r = c.poll_request(ms(0)).unwrap();
        assert_eq!(r.term, 1);
        // The request takes 300 ms to arrive; the witness counts from receipt.
        let (answer, _) = w.request(ms(300), "alpha", r.term, r.duration);
        let Answer::Granted { duration, term } = answer else {
            panic!("{answer:?}")
        };
        c.granted(r.request, duration, term);
        assert!(c.valid(ms(1899)));
        assert!(!c.valid(ms(1900)), "valid until sent + lease - margin");
        assert!(c.valid_until().unwrap() < w.lease(ms(0)).unwrap().expires);
        // Renewal is due at a fifth of the lease, under the same term.
        assert!(c.poll_request(ms(350)).is_none());
        let renew = c.poll_request(ms(400)).unwrap();
        assert_eq!(renew.term, 1);
        // A late grant for an old request id changes nothing.
        c.granted(r.request, TWO, 1);
        assert!(!c.valid(ms(1900)));
        // Not wanting it any more: invalid at once, a release (zero-length renewal under its
        // term), then no more requests.
        c.set_wanted(ms(700), false);
        assert!(!c.valid(ms(700)));
        let release = c.poll_request(ms(700)).unwrap();
        assert_eq!((release.term, release.duration), (1, Duration::ZERO));
        assert!(c.poll_request(ms(5000)).is_none());
        // At the witness, the release ends the lease at once: the next node need not wait.
        w.request(ms(700), "alpha", release.term, release.duration);
        assert!(w.lease(ms(700)).is_none());
        assert!(matches!(
            w.request(ms(701), "beta", 2, TWO).0,
            Answer::Granted { term: 2, .. }
        ));
    }

    #[test]
    fn an_ended_lease_no_longer_asks_to_be_woken() {
        let mut c = LeaseClient::new(TWO, Duration::from_millis(100));
        c.set_wanted(ms(0), true);
        let r = c.poll_request(ms(0)).unwrap();
        c.granted(r.request, TWO, r.term);
        // Renewals from 0.4 s on, retried every 50 ms, keep failing (no answer): the lease
        // ends at 1.9 s.
        let mut sent = Vec::new();
        while let Some(t) = c.poll_timeout().filter(|&t| t < ms(1900)) {
            c.handle_timeout(t);
            if c.poll_request(t).is_some() {
                sent.push(t);
            }
        }
        assert_eq!(sent.first(), Some(&ms(400)));
        assert_eq!(sent.get(1), Some(&ms(450)));
        c.handle_timeout(ms(1900));
        let _ = c.poll_request(ms(1900));
        assert!(!c.valid(ms(1900)));
        assert!(
            c.poll_timeout().is_some_and(|t| t > ms(1900)),
            "a timer in the past would spin the caller's loop"
        );
    }

    #[test]
    fn a_refused_node_asks_again_above_the_term_it_learned() {
        let mut c = LeaseClient::new(TWO, Duration::from_millis(100));
        c.set_wanted(ms(0), true);
        let r = c.poll_request(ms(0)).unwrap();
        c.refused(ms(10), r.request, 5, Duration::from_millis(400));
        assert!(c.poll_request(ms(300)).is_none());
        let again = c.poll_request(ms(410)).unwrap();
        assert_eq!(again.term, 6);
        c.observe_term(9);
        c.refused(ms(420), again.request, 5, Duration::ZERO);
        assert_eq!(c.poll_request(ms(420)).unwrap().term, 10);
    }
}
