//! Linearizability checker for a key-value store modelled as a map of independent registers.
//!
//! Record every client operation in a [`History`] when it is invoked and when its response
//! arrives, then call [`check`]. Every key starts absent (`Get` returns `None`).
//!
//! # Real-time order
//!
//! The real-time order is the order of the calls to [`History::invoke`] and
//! [`History::complete`]: operation `a` precedes `b` if and only if `a`'s completion was recorded
//! before `b`'s invocation, even when both carry the same logical `time`. The `time` values are
//! only used in reports. So record an invocation before the request can take effect, and a
//! completion only after the client has received the response.
//!
//! # Algorithm
//!
//! Registers are independent, so a history is linearizable if and only if its restriction to each
//! key is (P-compositionality); keys are checked one at a time in ascending order. Each key is
//! checked with the Wing & Gong search as improved by Lowe (the "WGL" algorithm used by Porcupine
//! and Knossos): invocation and completion events sit in a doubly linked list in real-time order;
//! the search repeatedly linearizes an operation whose invocation comes before the first remaining
//! completion, removing both of its events from the list, and backtracks when it meets a
//! completion whose operation cannot be linearized. A set of (linearized operations as a bitset,
//! register value) pairs already explored cuts repeated work. Two kinds of moves never lose a
//! linearization, so the search makes them without branching: a read of the current value, and a
//! put whose value nothing reads hidden just before an earlier concurrent write (see
//! `Searcher::free_move`). The search is iterative (an explicit stack) and bounded by a step
//! budget.
//!
//! Cost: a few search steps per operation for histories with a handful of concurrent clients
//! (2,000 operations check in about a millisecond in release builds); in the worst case the search
//! is exponential in the number of concurrent operations, which the budget cuts off. Each explored
//! configuration keeps its bitset (about 100 bytes plus one bit per operation of the key).
//!
//! Operations that never completed have an unknown outcome. A pending `Get` is dropped. A pending
//! `Put` may take effect at any point after its invocation, or never; a pending `Put` whose value
//! no completed `Get` of that key returned is dropped up front (never taking effect is always at
//! least as good for it).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Key type of the model.
pub type Key = u64;
/// Value type of the model.
pub type Value = u64;

/// Search steps [`check`] allows per key before giving up with [`CheckError::BudgetExceeded`].
/// Histories from a handful of concurrent clients take a few steps per operation; this bounds a
/// pathological key to roughly a second and, for a few hundred operations, about 100 MiB.
pub const DEFAULT_MAX_STEPS: u64 = 1_000_000;

/// How many operations a report lists at most.
const REPORT_MAX_OPS: usize = 12;
/// How many operations of the longest linearization a report shows (its tail).
const REPORT_TAIL_OPS: usize = 5;

/// An operation a client asks of the key-value store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Read the value of a key.
    Get {
        /// The key read.
        key: Key,
    },
    /// Overwrite the value of a key.
    Put {
        /// The key written.
        key: Key,
        /// The value written.
        value: Value,
    },
}

impl KvOp {
    fn key(&self) -> Key {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } => *key,
        }
    }
}

/// The response to a [`KvOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// The value read by a `Get`; `None` if the key was absent.
    Get(Option<Value>),
    /// A `Put` took effect.
    Put,
}

/// Identifies one operation in a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub usize);

/// One invoked operation.
#[derive(Clone, Debug)]
struct Record {
    client: u64,
    op: KvOp,
    invoke_time: u64,
    /// Position of the invocation in the real-time order.
    invoke_seq: u64,
    /// `None` while the outcome is unknown.
    completion: Option<Completion>,
}

#[derive(Clone, Debug)]
struct Completion {
    result: KvResult,
    time: u64,
    /// Position of the completion in the real-time order.
    seq: u64,
}

/// A concurrent history of key-value operations: invocations and completions in real-time order.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Indexed by `OpId`, in invocation order.
    records: Vec<Record>,
    // Invariant: every recorded `invoke_seq` and completion `seq` is `< next_seq`.
    next_seq: u64,
    // Invariant: every recorded time is `<= last_time`.
    last_time: u64,
}

impl History {
    /// Returns an empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records the invocation of `op` by `client` at logical time `time`.
    ///
    /// Times must be non-decreasing across calls to `invoke` and `complete` (debug-asserted).
    pub fn invoke(&mut self, client: u64, op: KvOp, time: u64) -> OpId {
        self.advance_time(time);
        let id = OpId(self.records.len());
        self.records.push(Record {
            client,
            op,
            invoke_time: time,
            invoke_seq: self.next_seq,
            completion: None,
        });
        self.next_seq += 1;
        id
    }

    /// Records that `id` returned `result` at `time`.
    ///
    /// An operation never completed has an unknown outcome: it may or may not have taken effect,
    /// at any time after its invocation.
    ///
    /// Completing an unknown id, completing an operation twice, or a result of the wrong kind
    /// (`KvResult::Put` for a `Get`) is a bug in the caller: it panics in debug builds, and in
    /// release builds the call is ignored (the operation keeps its earlier state).
    pub fn complete(&mut self, id: OpId, result: KvResult, time: u64) {
        let Some(record) = self.records.get(id.0) else {
            debug_assert!(false, "complete({id:?}): no such operation");
            return;
        };
        let kinds_match = matches!(
            (&record.op, &result),
            (KvOp::Get { .. }, KvResult::Get(_)) | (KvOp::Put { .. }, KvResult::Put)
        );
        debug_assert!(record.completion.is_none(), "complete({id:?}) called twice");
        debug_assert!(kinds_match, "complete({id:?}): {result:?} does not answer {:?}", record.op);
        if record.completion.is_some() || !kinds_match {
            return;
        }
        self.advance_time(time);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records[id.0].completion = Some(Completion { result, time, seq });
    }

    /// Number of operations invoked, completed or not.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no operation was invoked.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn advance_time(&mut self, time: u64) {
        debug_assert!(
            time >= self.last_time,
            "history time went backwards: {time} < {}",
            self.last_time
        );
        self.last_time = self.last_time.max(time);
    }
}

/// The history admits no linearization for `key`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("history is not linearizable for key {key}: {detail}")]
pub struct NotLinearizable {
    /// The first key (in ascending order) whose operations cannot be linearized.
    pub key: Key,
    /// What went wrong, naming the operations involved as `#id c<client> <op> t<invoke>..<return>`.
    pub detail: String,
}

/// Why [`check`] did not accept a history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The history is not linearizable.
    #[error(transparent)]
    NotLinearizable(#[from] NotLinearizable),
    /// The search for `key` took more than the allowed steps; the history may or may not be
    /// linearizable.
    #[error("linearizability check of key {key} gave up after {steps} search steps")]
    BudgetExceeded {
        /// The key being checked.
        key: Key,
        /// Steps taken on that key.
        steps: u64,
    },
}

/// Checks `history` against a map from keys to registers, initially all absent, with a budget of
/// [`DEFAULT_MAX_STEPS`] search steps per key.
pub fn check(history: &History) -> Result<(), CheckError> {
    check_with_budget(history, DEFAULT_MAX_STEPS)
}

/// Like [`check`], with at most `max_steps` search steps per key. A step is one attempt to
/// linearize an operation or one backtrack.
pub fn check_with_budget(history: &History, max_steps: u64) -> Result<(), CheckError> {
    let mut by_key: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (index, record) in history.records.iter().enumerate() {
        by_key.entry(record.op.key()).or_default().push(index);
    }
    for (key, indices) in by_key {
        check_key(&history.records, key, &indices, max_steps)?;
    }
    Ok(())
}

fn check_key(
    records: &[Record],
    key: Key,
    indices: &[usize],
    max_steps: u64,
) -> Result<(), CheckError> {
    let ops = key_ops(records, indices);
    if let Some(read) = unexplained_read(&ops) {
        let detail = format!(
            "{} returned a value that no put of this key invoked before it returned wrote",
            describe(records, ops[read].record)
        );
        return Err(NotLinearizable { key, detail }.into());
    }
    match Searcher::new(&ops).run(max_steps) {
        Outcome::Linearizable => Ok(()),
        Outcome::Stuck { best } => {
            let detail = stuck_detail(records, &ops, &best);
            Err(NotLinearizable { key, detail }.into())
        }
        Outcome::OutOfSteps { steps } => Err(CheckError::BudgetExceeded { key, steps }),
    }
}

/// What an operation of one key does to its register.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// A completed `Get` that returned this.
    Read(Option<Value>),
    /// A `Put`, completed or pending.
    Write(Value),
}

impl Effect {
    /// The register value after this effect, or `None` if it cannot take effect on `state`.
    fn apply(self, state: Option<Value>) -> Option<Option<Value>> {
        match self {
            Effect::Read(read) => (read == state).then_some(state),
            Effect::Write(value) => Some(Some(value)),
        }
    }
}

/// An operation of the key being checked.
#[derive(Clone, Copy, Debug)]
struct KeyOp {
    /// Index into the history's records.
    record: usize,
    effect: Effect,
    call_seq: u64,
    /// `None` for a pending `Put`, which behaves as if it returned at infinity.
    return_seq: Option<u64>,
}

impl KeyOp {
    fn return_order(&self) -> u64 {
        self.return_seq.unwrap_or(u64::MAX)
    }
}

/// The operations of one key that the search must consider, in invocation order: completed
/// operations, and pending `Put`s whose value some completed `Get` of the key returned.
fn key_ops(records: &[Record], indices: &[usize]) -> Vec<KeyOp> {
    let observed: HashSet<Value> = indices
        .iter()
        .filter_map(|&i| match &records[i].completion {
            Some(Completion { result: KvResult::Get(Some(value)), .. }) => Some(*value),
            _ => None,
        })
        .collect();
    let mut ops = Vec::with_capacity(indices.len());
    for &record in indices {
        let r = &records[record];
        let return_seq = r.completion.as_ref().map(|c| c.seq);
        let effect = match (&r.op, &r.completion) {
            (KvOp::Get { .. }, Some(Completion { result: KvResult::Get(read), .. })) => {
                Effect::Read(*read)
            }
            (KvOp::Put { value, .. }, Some(_)) => Effect::Write(*value),
            (KvOp::Put { value, .. }, None) if observed.contains(value) => Effect::Write(*value),
            _ => continue,
        };
        ops.push(KeyOp { record, effect, call_seq: r.invoke_seq, return_seq });
    }
    ops
}

/// A `Get` that returned a value no `Put` invoked before the `Get` returned could have written.
/// Such a history is plainly not linearizable; finding it here gives a clearer report.
fn unexplained_read(ops: &[KeyOp]) -> Option<usize> {
    let mut first_write: HashMap<Value, u64> = HashMap::new();
    for op in ops {
        if let Effect::Write(value) = op.effect {
            first_write.entry(value).or_insert(op.call_seq);
        }
    }
    ops.iter().position(|op| match op.effect {
        Effect::Read(Some(value)) => {
            first_write.get(&value).is_none_or(|&call_seq| call_seq >= op.return_order())
        }
        _ => false,
    })
}

/// A set of operation indices, with a Zobrist hash (the XOR of a fixed pseudo-random word per
/// member) kept up to date as members come and go.
#[derive(Clone, Debug)]
struct OpSet {
    words: Box<[u64]>,
    // Invariant: the XOR of `member_hash(i)` over the members `i`.
    hash: u64,
}

impl OpSet {
    fn new(len: usize) -> OpSet {
        OpSet { words: vec![0; len.div_ceil(64)].into_boxed_slice(), hash: 0 }
    }

    fn insert(&mut self, i: usize) {
        debug_assert_eq!(self.words[i / 64] & (1 << (i % 64)), 0, "op {i} inserted twice");
        self.words[i / 64] |= 1 << (i % 64);
        self.hash ^= member_hash(i);
    }

    fn remove(&mut self, i: usize) {
        debug_assert_ne!(self.words[i / 64] & (1 << (i % 64)), 0, "op {i} is not a member");
        self.words[i / 64] &= !(1 << (i % 64));
        self.hash ^= member_hash(i);
    }
}

/// The splitmix64 output for `i`: a fixed pseudo-random word per operation.
fn member_hash(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Configurations (linearized operations, register value) the search has reached. Keyed by the
/// set's hash, so a lookup costs a hash of two words plus comparing the sets sharing it.
#[derive(Debug, Default)]
struct Explored(HashMap<ConfigHash, Vec<Box<[u64]>>>);

/// The hash of a set of linearized operations, and the register value.
type ConfigHash = (u64, Option<Value>);

impl Explored {
    /// Records a configuration; returns whether it is new.
    fn insert(&mut self, linearized: &OpSet, state: Option<Value>) -> bool {
        let sets = self.0.entry((linearized.hash, state)).or_default();
        if sets.contains(&linearized.words) {
            return false;
        }
        sets.push(linearized.words.clone());
        true
    }
}

/// End of the event list.
const NIL: usize = usize::MAX;

/// One invocation or completion in the event list.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: usize,
    next: usize,
    /// Index into the key's operations (`NIL` for the head sentinel).
    op: usize,
    /// The node of the same operation's other event.
    partner: usize,
    is_call: bool,
}

/// Events of one key in real-time order, as a doubly linked list over a vector. Node 0 is a head
/// sentinel. Removed nodes keep their links, so they can be put back in reverse order of removal
/// ("dancing links").
struct EventList {
    nodes: Vec<Node>,
}

impl EventList {
    fn new(ops: &[KeyOp]) -> EventList {
        let mut events: Vec<(u64, usize, bool)> = Vec::with_capacity(2 * ops.len());
        for (op, key_op) in ops.iter().enumerate() {
            events.push((key_op.call_seq, op, true));
            events.push((key_op.return_order(), op, false));
        }
        events.sort_unstable();
        let head = Node { prev: NIL, next: NIL, op: NIL, partner: NIL, is_call: false };
        let mut nodes = Vec::with_capacity(events.len() + 1);
        nodes.push(head);
        let mut partner = vec![NIL; ops.len()];
        for (position, &(_, op, is_call)) in events.iter().enumerate() {
            let node = position + 1;
            nodes[node - 1].next = node;
            nodes.push(Node { prev: node - 1, next: NIL, op, partner: NIL, is_call });
            if partner[op] == NIL {
                partner[op] = node;
            } else {
                nodes[node].partner = partner[op];
                nodes[partner[op]].partner = node;
            }
        }
        EventList { nodes }
    }

    fn first(&self) -> usize {
        self.nodes[0].next
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    /// Removes a call and its completion.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].partner);
    }

    /// Undoes the most recent `lift` still in effect, which must have been of `call`.
    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].partner);
        self.relink(call);
    }
}

/// A longest partial linearization found by the search.
#[derive(Debug, Default)]
struct Best {
    /// Operations in linearization order.
    order: Vec<usize>,
    /// The register value after them.
    state: Option<Value>,
}

enum Outcome {
    Linearizable,
    /// No linearization exists.
    Stuck {
        best: Best,
    },
    OutOfSteps {
        steps: u64,
    },
}

/// Where the search is.
enum Cursor {
    /// At a configuration just reached: look for a free move first.
    Fresh,
    /// Scanning the event list for a call to linearize next.
    At(usize),
    /// The current configuration has no linearization.
    Backtrack,
}

/// How the search linearized an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Move {
    /// Chosen among the candidates; backtracking tries the next candidate.
    Choice,
    /// A read of the current value (see `Searcher::free_move`).
    Read,
    /// An unread put hidden just before the last chosen write (see `Searcher::free_move`).
    Absorb,
}

/// An operation linearized by the search, with what it changed.
struct Frame {
    call: usize,
    how: Move,
    state_before: Option<Value>,
    absorb_limit_before: Option<u64>,
}

/// The WGL search over the operations of one key.
struct Searcher<'a> {
    ops: &'a [KeyOp],
    list: EventList,
    /// Completed puts whose value no read returned.
    unread: Vec<bool>,
    /// Operations linearized so far.
    linearized: OpSet,
    explored: Explored,
    stack: Vec<Frame>,
    state: Option<Value>,
    /// Position in the real-time order of the first completion left in the list when the last
    /// chosen write was linearized; `None` before any.
    absorb_limit: Option<u64>,
    // Invariant: the number of completed operations not in `linearized`.
    completed_left: usize,
    best: Best,
}

impl<'a> Searcher<'a> {
    fn new(ops: &'a [KeyOp]) -> Searcher<'a> {
        let read: HashSet<Value> = ops
            .iter()
            .filter_map(|op| match op.effect {
                Effect::Read(read) => read,
                Effect::Write(_) => None,
            })
            .collect();
        let unread = ops
            .iter()
            .map(|op| {
                op.return_seq.is_some()
                    && matches!(op.effect, Effect::Write(value) if !read.contains(&value))
            })
            .collect();
        Searcher {
            ops,
            list: EventList::new(ops),
            unread,
            linearized: OpSet::new(ops.len()),
            explored: Explored::default(),
            stack: Vec::new(),
            state: None,
            absorb_limit: None,
            completed_left: ops.iter().filter(|op| op.return_seq.is_some()).count(),
            best: Best::default(),
        }
    }

    fn run(mut self, max_steps: u64) -> Outcome {
        let mut steps = 0;
        let mut cursor = Cursor::Fresh;
        // Pending puts left over at the end never took effect.
        while self.completed_left > 0 {
            if steps == max_steps {
                return Outcome::OutOfSteps { steps };
            }
            steps += 1;
            cursor = match cursor {
                Cursor::Fresh => match self.free_move() {
                    None => Cursor::At(self.list.first()),
                    Some((call, how)) if self.linearize(call, how) => Cursor::Fresh,
                    // What follows the free move was explored and failed, so this fails too.
                    Some(_) => Cursor::Backtrack,
                },
                // Every completed operation's completion is still in the list and comes before
                // the pending puts' (at infinity), so the scan meets a completion before the end.
                Cursor::At(node) if node != NIL && self.list.nodes[node].is_call => {
                    if self.linearize(node, Move::Choice) {
                        Cursor::Fresh
                    } else {
                        Cursor::At(self.list.nodes[node].next)
                    }
                }
                Cursor::At(_) | Cursor::Backtrack => match self.backtrack() {
                    Some(call) => Cursor::At(self.list.nodes[call].next),
                    None => return Outcome::Stuck { best: self.best },
                },
            };
        }
        Outcome::Linearizable
    }

    /// A move that loses no linearization: if the current configuration has one, so has the
    /// configuration after the move. The search makes it without branching, and undoes it only
    /// together with the choice before it. Free moves are among the candidates (invoked before
    /// the first completion left in the list):
    /// - a read of the current value: it can be moved to the front of any linearization of the
    ///   rest, as no remaining operation returned before it was invoked and it changes nothing;
    /// - a completed put whose value no read returned, invoked before `absorb_limit`: it can go
    ///   just before the last chosen write, which hides its value, and real-time order holds
    ///   around it there (everything linearized since has a later completion than its
    ///   invocation, and it has not returned yet). Any linearization of the rest holding it is
    ///   still one without it, as nothing reads what it wrote.
    fn free_move(&self) -> Option<(usize, Move)> {
        let mut node = self.list.first();
        while node != NIL && self.list.nodes[node].is_call {
            let op = self.list.nodes[node].op;
            match self.ops[op].effect {
                Effect::Read(read) if read == self.state => return Some((node, Move::Read)),
                Effect::Write(_) if self.absorbable(op) => return Some((node, Move::Absorb)),
                _ => node = self.list.nodes[node].next,
            }
        }
        None
    }

    fn absorbable(&self, op: usize) -> bool {
        let limit = self.absorb_limit;
        self.unread[op] && limit.is_some_and(|limit| self.ops[op].call_seq <= limit)
    }

    /// Position in the real-time order of the first completion left in the list.
    fn first_return_seq(&self) -> u64 {
        let mut node = self.list.first();
        while node != NIL && self.list.nodes[node].is_call {
            node = self.list.nodes[node].next;
        }
        if node == NIL { u64::MAX } else { self.ops[self.list.nodes[node].op].return_order() }
    }

    /// Linearizes the operation invoked at `call` next, unless it cannot take effect on the
    /// current state or the resulting configuration was already explored.
    fn linearize(&mut self, call: usize, how: Move) -> bool {
        let op = self.list.nodes[call].op;
        let next_state = match how {
            Move::Choice => match self.ops[op].effect.apply(self.state) {
                Some(state) => state,
                None => return false,
            },
            Move::Read | Move::Absorb => self.state,
        };
        self.linearized.insert(op);
        if !self.explored.insert(&self.linearized, next_state) {
            self.linearized.remove(op);
            return false;
        }
        let absorb_limit_before = self.absorb_limit;
        if how == Move::Choice && matches!(self.ops[op].effect, Effect::Write(_)) {
            self.absorb_limit = Some(self.first_return_seq());
        }
        self.stack.push(Frame { call, how, state_before: self.state, absorb_limit_before });
        self.state = next_state;
        self.list.lift(call);
        if self.ops[op].return_seq.is_some() {
            self.completed_left -= 1;
        }
        true
    }

    /// Undoes linearized operations up to and including the last choice, and returns that
    /// choice's call node, or `None` if there is none. Free moves are undone without trying
    /// alternatives: if what follows one fails, so does the configuration before it.
    fn backtrack(&mut self) -> Option<usize> {
        // Every configuration reached is backtracked from unless the search succeeds.
        if self.stack.len() > self.best.order.len() {
            self.best = self.snapshot();
        }
        loop {
            let frame = self.stack.pop()?;
            let op = self.list.nodes[frame.call].op;
            self.state = frame.state_before;
            self.absorb_limit = frame.absorb_limit_before;
            self.linearized.remove(op);
            self.list.unlift(frame.call);
            if self.ops[op].return_seq.is_some() {
                self.completed_left += 1;
            }
            if frame.how == Move::Choice {
                return Some(frame.call);
            }
        }
    }

    /// The current partial linearization, with absorbed puts where they belong.
    fn snapshot(&self) -> Best {
        let mut order = Vec::with_capacity(self.stack.len());
        let mut last_write = None;
        for frame in &self.stack {
            let op = self.list.nodes[frame.call].op;
            match (frame.how, last_write) {
                (Move::Absorb, Some(at)) => {
                    order.insert(at, op);
                    last_write = Some(at + 1);
                }
                _ => {
                    if let Effect::Write(_) = self.ops[op].effect {
                        last_write = Some(order.len());
                    }
                    order.push(op);
                }
            }
        }
        Best { order, state: self.state }
    }
}

/// Explains where the longest partial linearization `best` got stuck.
fn stuck_detail(records: &[Record], ops: &[KeyOp], best: &Best) -> String {
    let mut done = vec![false; ops.len()];
    for &op in &best.order {
        done[op] = true;
    }
    let blocking = (0..ops.len())
        .filter(|&op| !done[op] && ops[op].return_seq.is_some())
        .min_by_key(|&op| ops[op].return_order());
    let Some(blocking) = blocking else {
        let (linearized, total) = (best.order.len(), ops.len());
        return format!("search failed after linearizing {linearized} of {total} ops");
    };
    let deadline = ops[blocking].return_order();
    let candidates: Vec<usize> =
        (0..ops.len()).filter(|&op| !done[op] && ops[op].call_seq < deadline).collect();
    let order = &best.order;
    let tail = &order[order.len().saturating_sub(REPORT_TAIL_OPS)..];
    let ellipsis = if tail.len() < order.len() { "..., " } else { "" };
    format!(
        "at most {} of {} ops can be linearized; the longest linearization ends with \
         [{ellipsis}{}] leaving the register at {:?}; next, {} must take effect before it \
         returns, but none of the ops that may come before it can: [{}]",
        order.len(),
        ops.len(),
        describe_ops(records, ops, tail),
        best.state,
        describe(records, ops[blocking].record),
        describe_ops(records, ops, &candidates),
    )
}

/// Describes at most `REPORT_MAX_OPS` of the key operations `list`.
fn describe_ops(records: &[Record], ops: &[KeyOp], list: &[usize]) -> String {
    let mut parts: Vec<String> =
        list.iter().take(REPORT_MAX_OPS).map(|&op| describe(records, ops[op].record)).collect();
    if list.len() > REPORT_MAX_OPS {
        parts.push(format!("and {} more", list.len() - REPORT_MAX_OPS));
    }
    parts.join(", ")
}

/// Describes one operation as `#id c<client> <op> t<invoke>..<return>` (`?` if pending).
fn describe(records: &[Record], record: usize) -> String {
    let r = &records[record];
    let what = match (&r.op, &r.completion) {
        (KvOp::Put { value, .. }, _) => format!("put({value})"),
        (KvOp::Get { .. }, Some(Completion { result: KvResult::Get(read), .. })) => {
            format!("get->{read:?}")
        }
        (KvOp::Get { .. }, _) => "get->?".to_string(),
    };
    let end = r.completion.as_ref().map_or_else(|| "?".to_string(), |c| c.time.to_string());
    format!("#{record} c{} {what} t{}..{end}", r.client, r.invoke_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(h: &mut History, client: u64, key: Key, value: Value, time: u64) -> OpId {
        h.invoke(client, KvOp::Put { key, value }, time)
    }

    fn get(h: &mut History, client: u64, key: Key, time: u64) -> OpId {
        h.invoke(client, KvOp::Get { key }, time)
    }

    fn put_done(h: &mut History, id: OpId, time: u64) {
        h.complete(id, KvResult::Put, time);
    }

    fn got(h: &mut History, id: OpId, read: Option<Value>, time: u64) {
        h.complete(id, KvResult::Get(read), time);
    }

    /// Asserts that `h` is not linearizable because of `key`, returning the report.
    fn assert_violation(h: &History, key: Key) -> String {
        match check(h) {
            Err(CheckError::NotLinearizable(e)) => {
                assert_eq!(e.key, key, "{e}");
                e.to_string()
            }
            other => panic!("expected a violation on key {key}, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        let h = History::new();
        assert!(h.is_empty());
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn sequential_put_then_get_is_linearizable() {
        let mut h = History::new();
        let g = get(&mut h, 1, 0, 0);
        got(&mut h, g, None, 1);
        let p = put(&mut h, 1, 0, 7, 2);
        put_done(&mut h, p, 3);
        let g = get(&mut h, 2, 0, 4);
        got(&mut h, g, Some(7), 5);
        assert_eq!(h.len(), 3);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn get_of_never_written_value_is_not_linearizable() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 7, 0);
        put_done(&mut h, p, 1);
        let g = get(&mut h, 2, 0, 2);
        got(&mut h, g, Some(8), 3);
        let report = assert_violation(&h, 0);
        assert!(report.contains("#1 c2 get->Some(8) t2..3"), "{report}");
    }

    #[test]
    fn stale_read_after_completed_put_is_not_linearizable() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        let p = put(&mut h, 1, 0, 2, 2);
        put_done(&mut h, p, 3);
        let g = get(&mut h, 2, 0, 4);
        got(&mut h, g, Some(1), 5);
        let report = assert_violation(&h, 0);
        assert!(report.contains("at most 2 of 3 ops"), "{report}");
        assert!(report.contains("#2 c2 get->Some(1) t4..5 must take effect"), "{report}");
    }

    #[test]
    fn lost_write_is_not_linearizable() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        let g = get(&mut h, 2, 0, 2);
        got(&mut h, g, None, 3);
        assert_violation(&h, 0);
    }

    #[test]
    fn get_concurrent_with_put_may_return_old_or_new() {
        for read in [None, Some(1)] {
            let mut h = History::new();
            let p = put(&mut h, 1, 0, 1, 0);
            let g = get(&mut h, 2, 0, 1);
            got(&mut h, g, read, 2);
            put_done(&mut h, p, 3);
            assert_eq!(check(&h), Ok(()), "read {read:?}");
        }
    }

    #[test]
    fn new_then_old_inversion_is_not_linearizable() {
        // Both gets overlap the put, but the first returns before the second is invoked.
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        let g1 = get(&mut h, 2, 0, 1);
        got(&mut h, g1, Some(1), 2);
        let g2 = get(&mut h, 3, 0, 3);
        got(&mut h, g2, None, 4);
        put_done(&mut h, p, 5);
        assert_violation(&h, 0);
    }

    #[test]
    fn old_then_new_is_linearizable() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        let g1 = get(&mut h, 2, 0, 1);
        got(&mut h, g1, None, 2);
        let g2 = get(&mut h, 3, 0, 3);
        got(&mut h, g2, Some(1), 4);
        put_done(&mut h, p, 5);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn unread_put_must_still_take_effect() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        let p = put(&mut h, 1, 0, 9, 2);
        put_done(&mut h, p, 3);
        let g = get(&mut h, 2, 0, 4);
        got(&mut h, g, Some(1), 5);
        assert_violation(&h, 0);
    }

    #[test]
    fn unread_put_may_hide_behind_concurrent_put() {
        // put(9) overlaps put(1), so it can take effect just before it; nothing reads 9.
        let mut h = History::new();
        let p9 = put(&mut h, 1, 0, 9, 0);
        let p1 = put(&mut h, 2, 0, 1, 1);
        put_done(&mut h, p9, 2);
        put_done(&mut h, p1, 3);
        let g = get(&mut h, 3, 0, 4);
        got(&mut h, g, Some(1), 5);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn pending_put_may_be_observed() {
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0);
        let g = get(&mut h, 2, 0, 5);
        got(&mut h, g, Some(1), 6);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn pending_put_may_never_take_effect() {
        let mut h = History::new();
        put(&mut h, 1, 0, 1, 0);
        let g = get(&mut h, 2, 0, 5);
        got(&mut h, g, None, 6);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn pending_put_observed_cannot_be_unobserved() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        put(&mut h, 1, 0, 2, 2);
        let g = get(&mut h, 2, 0, 3);
        got(&mut h, g, Some(2), 4);
        let g = get(&mut h, 2, 0, 5);
        got(&mut h, g, Some(1), 6);
        assert_violation(&h, 0);
    }

    #[test]
    fn pending_get_is_ignored() {
        let mut h = History::new();
        get(&mut h, 1, 0, 0);
        let p = put(&mut h, 2, 0, 1, 1);
        put_done(&mut h, p, 2);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn get_cannot_observe_put_invoked_after_it_returned() {
        let mut h = History::new();
        let g = get(&mut h, 1, 0, 0);
        got(&mut h, g, Some(1), 1);
        let p = put(&mut h, 2, 0, 1, 2);
        put_done(&mut h, p, 3);
        let report = assert_violation(&h, 0);
        assert!(report.contains("no put of this key invoked before it returned"), "{report}");
    }

    #[test]
    fn events_at_equal_times_are_ordered_by_calls() {
        // The put's completion is recorded before the get's invocation, at the same time.
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        let g = get(&mut h, 2, 0, 1);
        got(&mut h, g, None, 1);
        assert_violation(&h, 0);
    }

    #[test]
    fn keys_are_independent_and_violation_names_its_key() {
        let mut h = History::new();
        let p1 = put(&mut h, 1, 1, 5, 0);
        let p2 = put(&mut h, 2, 2, 5, 0);
        put_done(&mut h, p1, 1);
        put_done(&mut h, p2, 1);
        // Key 1 has value 5, so key 2 reading None after its put completed is a violation
        // regardless of key 1; key 3 never written reads None.
        let g1 = get(&mut h, 3, 1, 2);
        let g3 = get(&mut h, 3, 3, 2);
        let g2 = get(&mut h, 3, 2, 2);
        got(&mut h, g1, Some(5), 3);
        got(&mut h, g3, None, 3);
        got(&mut h, g2, None, 3);
        let report = assert_violation(&h, 2);
        assert!(report.contains("for key 2:"), "{report}");
    }

    #[test]
    fn budget_exceeded_is_reported() {
        let mut h = History::new();
        let p = put(&mut h, 1, 4, 1, 0);
        put_done(&mut h, p, 1);
        let g = get(&mut h, 1, 4, 2);
        got(&mut h, g, Some(1), 3);
        assert_eq!(check_with_budget(&h, 1), Err(CheckError::BudgetExceeded { key: 4, steps: 1 }));
        assert_eq!(check_with_budget(&h, 100), Ok(()));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "called twice")]
    fn complete_twice_panics_in_debug() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        put_done(&mut h, p, 2);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "no such operation")]
    fn complete_unknown_id_panics_in_debug() {
        let mut h = History::new();
        put_done(&mut h, OpId(3), 0);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn bad_completions_are_ignored_in_release() {
        let mut h = History::new();
        let p = put(&mut h, 1, 0, 1, 0);
        put_done(&mut h, p, 1);
        got(&mut h, p, Some(5), 2); // Twice, and the wrong kind.
        put_done(&mut h, OpId(7), 3); // Unknown.
        let g = get(&mut h, 2, 0, 4);
        got(&mut h, g, Some(1), 5);
        assert_eq!(h.len(), 2);
        assert_eq!(check(&h), Ok(()));
    }

    /// splitmix64, for deterministic random tests without a `rand` dependency.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn index(&mut self, len: usize) -> usize {
            self.below(len as u64) as usize
        }
    }

    /// A client's operation between invocation and completion. `result` is set once it took
    /// effect on the atomic register.
    struct InFlight {
        id: OpId,
        op: KvOp,
        result: Option<KvResult>,
    }

    /// Clients running against an atomic register map: each operation takes effect at one
    /// instant between its invocation and its completion, so the history is linearizable by
    /// construction. Some operations are abandoned (never completed), before or after taking
    /// effect; abandoned puts may still take effect later.
    struct RegisterSim {
        rng: SplitMix64,
        history: History,
        registers: Vec<Option<Value>>,
        clients: Vec<Option<InFlight>>,
        abandoned: Vec<KvOp>,
        time: u64,
        /// Values are drawn from `1..=value_range`, or unique if `None`.
        value_range: Option<u64>,
        next_value: Value,
    }

    impl RegisterSim {
        fn generate(
            seed: u64,
            clients: usize,
            ops: usize,
            keys: usize,
            value_range: Option<u64>,
        ) -> History {
            let mut sim = RegisterSim {
                rng: SplitMix64(seed),
                history: History::new(),
                registers: vec![None; keys],
                clients: (0..clients).map(|_| None).collect(),
                abandoned: Vec::new(),
                time: 0,
                value_range,
                next_value: 0,
            };
            while sim.history.len() < ops {
                sim.step();
            }
            sim.history
        }

        fn step(&mut self) {
            self.time += self.rng.below(2);
            let client = self.rng.index(self.clients.len());
            match self.clients[client].take() {
                None => self.clients[client] = Some(self.invoke(client as u64)),
                Some(f) if f.result.is_none() && self.rng.below(20) == 0 => {
                    self.abandoned.push(f.op)
                }
                Some(InFlight { id, op, result: None }) => {
                    let result = Some(self.apply(&op));
                    self.clients[client] = Some(InFlight { id, op, result });
                }
                Some(InFlight { id, result: Some(result), .. }) => {
                    if self.rng.below(20) != 0 {
                        self.history.complete(id, result, self.time);
                    }
                }
            }
            if !self.abandoned.is_empty() && self.rng.below(10) == 0 {
                let i = self.rng.index(self.abandoned.len());
                let op = self.abandoned.swap_remove(i);
                self.apply(&op);
            }
        }

        fn invoke(&mut self, client: u64) -> InFlight {
            let key = self.rng.below(self.registers.len() as u64);
            let op = if self.rng.below(2) == 0 {
                KvOp::Get { key }
            } else {
                self.next_value += 1;
                let value = self.value_range.map_or(self.next_value, |r| 1 + self.rng.below(r));
                KvOp::Put { key, value }
            };
            let id = self.history.invoke(client, op.clone(), self.time);
            InFlight { id, op, result: None }
        }

        fn apply(&mut self, op: &KvOp) -> KvResult {
            match *op {
                KvOp::Get { key } => KvResult::Get(self.registers[key as usize]),
                KvOp::Put { key, value } => {
                    self.registers[key as usize] = Some(value);
                    KvResult::Put
                }
            }
        }
    }

    fn completed_get(r: &Record) -> bool {
        matches!(r.op, KvOp::Get { .. }) && r.completion.is_some()
    }

    fn completed_put(r: &Record, key: Key) -> Option<(Value, &Completion)> {
        match (&r.op, &r.completion) {
            (KvOp::Put { key: k, value }, Some(c)) if *k == key => Some((*value, c)),
            _ => None,
        }
    }

    /// Makes a random completed get return a value never written. Returns its key.
    fn mutate_to_unwritten_value(h: &mut History, rng: &mut SplitMix64) -> Option<Key> {
        let gets: Vec<usize> = (0..h.len()).filter(|&i| completed_get(&h.records[i])).collect();
        let &i = gets.get(rng.index(gets.len().max(1)))?;
        let record = &mut h.records[i];
        record.completion.as_mut()?.result = KvResult::Get(Some(u64::MAX));
        Some(record.op.key())
    }

    /// With unique values: finds puts `q` then `p` (`q` returned before `p` was invoked) and a
    /// get `g` invoked after `p` returned, all on one key, and makes `g` return `q`'s value,
    /// which `p` must have overwritten. Returns the key.
    fn mutate_to_stale_read(h: &mut History) -> Option<Key> {
        for key in 0..16 {
            let records = &h.records;
            let Some((stale, q)) = records.iter().find_map(|r| completed_put(r, key)) else {
                continue;
            };
            let p = records
                .iter()
                .filter(|r| r.invoke_seq > q.seq)
                .find_map(|r| completed_put(r, key).map(|(_, c)| c));
            let Some(p) = p else { continue };
            let g = (0..records.len()).find(|&i| {
                let r = &records[i];
                completed_get(r) && r.op.key() == key && r.invoke_seq > p.seq
            });
            if let Some(g) = g {
                h.records[g].completion.as_mut()?.result = KvResult::Get(Some(stale));
                return Some(key);
            }
        }
        None
    }

    #[test]
    fn atomic_register_histories_pass_and_mutations_fail() {
        let (mut unwritten, mut stale) = (0, 0);
        for seed in 0..200 {
            let value_range = if seed % 2 == 0 { None } else { Some(3) };
            let mut h = RegisterSim::generate(seed, 1 + seed as usize % 5, 60, 3, value_range);
            assert_eq!(check(&h), Ok(()), "seed {seed}");
            let mut rng = SplitMix64(seed);
            let mut bad = h.clone();
            if let Some(key) = mutate_to_unwritten_value(&mut bad, &mut rng) {
                assert_violation(&bad, key);
                unwritten += 1;
            }
            if value_range.is_none()
                && let Some(key) = mutate_to_stale_read(&mut h)
            {
                let report = assert_violation(&h, key);
                assert!(report.contains("must take effect"), "seed {seed}: {report}");
                stale += 1;
            }
        }
        assert!(unwritten > 150 && stale > 50, "too few mutations: {unwritten}, {stale}");
    }

    /// Deliberately naive reference for one key: tries every order of every admissible subset of
    /// operations (all completed ones, any of the pending puts).
    fn naive_linearizable(h: &History) -> bool {
        let ops: Vec<&Record> = h
            .records
            .iter()
            .filter(|r| r.completion.is_some() || matches!(r.op, KvOp::Put { .. }))
            .collect();
        (0u32..1 << ops.len()).any(|mask| {
            let mut order: Vec<usize> = (0..ops.len()).filter(|&i| mask & (1 << i) != 0).collect();
            let all_completed_in =
                (0..ops.len()).all(|i| mask & (1 << i) != 0 || ops[i].completion.is_none());
            all_completed_in && some_permutation_valid(&ops, &mut order, 0)
        })
    }

    fn some_permutation_valid(ops: &[&Record], order: &mut [usize], k: usize) -> bool {
        if k == order.len() {
            return order_valid(ops, order);
        }
        for i in k..order.len() {
            order.swap(k, i);
            if some_permutation_valid(ops, order, k + 1) {
                return true;
            }
            order.swap(k, i);
        }
        false
    }

    fn order_valid(ops: &[&Record], order: &[usize]) -> bool {
        for (a, &first) in order.iter().enumerate() {
            for &later in &order[a + 1..] {
                let returned = ops[later].completion.as_ref().map_or(u64::MAX, |c| c.seq);
                if returned < ops[first].invoke_seq {
                    return false;
                }
            }
        }
        let mut state = None;
        order.iter().all(|&i| match (&ops[i].op, &ops[i].completion) {
            (KvOp::Put { value, .. }, _) => {
                state = Some(*value);
                true
            }
            (KvOp::Get { .. }, Some(c)) => c.result == KvResult::Get(state),
            (KvOp::Get { .. }, None) => unreachable!("pending gets are filtered out"),
        })
    }

    /// A random history of at most 6 operations on key 0 with random results; nothing reads
    /// the value 3.
    fn random_small_history(rng: &mut SplitMix64) -> History {
        let ops = 1 + rng.index(6);
        let mut in_flight: Vec<Option<(OpId, bool)>> = vec![None; 1 + rng.index(3)];
        let mut h = History::new();
        let mut time = 0;
        while h.len() < ops || in_flight.iter().any(Option::is_some) {
            time += 1;
            let client = rng.index(in_flight.len());
            match in_flight[client].take() {
                None if h.len() < ops => {
                    let is_put = rng.below(2) == 0;
                    let op = if is_put {
                        KvOp::Put { key: 0, value: 1 + rng.below(2) }
                    } else {
                        KvOp::Get { key: 0 }
                    };
                    in_flight[client] = Some((h.invoke(client as u64, op, time), is_put));
                }
                None => {}
                Some(_) if rng.below(8) == 0 => {} // abandoned
                Some((id, true)) => h.complete(id, KvResult::Put, time),
                Some((id, false)) => {
                    let read = [None, Some(1), Some(2)][rng.index(3)];
                    h.complete(id, KvResult::Get(read), time);
                }
            }
        }
        h
    }

    #[test]
    fn agrees_with_naive_reference_on_small_random_histories() {
        let mut rng = SplitMix64(42);
        let (mut good, mut bad) = (0, 0);
        for case in 0..3000 {
            let h = random_small_history(&mut rng);
            let expected = naive_linearizable(&h);
            let actual = check(&h);
            assert_eq!(actual.is_ok(), expected, "case {case}: {actual:?}\n{h:?}");
            if expected {
                good += 1;
            } else {
                bad += 1;
            }
        }
        assert!(good > 500 && bad > 500, "unbalanced cases: {good} good, {bad} bad");
    }

    #[test]
    fn large_history_is_checked() {
        for (seed, value_range) in [(1, None), (2, Some(4)), (3, Some(2))] {
            let mut h = RegisterSim::generate(seed, 5, 2000, 10, value_range);
            assert_eq!(check(&h), Ok(()), "seed {seed}");
            if let Some(key) = mutate_to_unwritten_value(&mut h, &mut SplitMix64(seed)) {
                assert_violation(&h, key);
            }
        }
        let mut h = RegisterSim::generate(4, 5, 2000, 10, None);
        let key = mutate_to_stale_read(&mut h).expect("a stale read to inject");
        assert_violation(&h, key);
    }
}
