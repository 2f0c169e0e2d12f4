//! Anchored offset paging (docs/design.md §4, "Offset paging never skips a row"), as a
//! pure walk over positions of one listing: which position to ask for next, and what a
//! reply's keys say about rows that shifted under the run.
//!
//! Every page after the first must list an **anchor**: the latest-positioned key of the
//! page accepted before it. An offset API is asked for each page from the position of
//! the previous page's last row, so the page overlaps it by one row and the anchor is
//! expected first. A page-number API cannot overlap: the page after is read, then the
//! page of the anchor is asked for again (a *check*) and must still list it. Found (where
//! expected, or further on: rows were inserted before it, which is a harmless re-read):
//! the rows after it are the listing's next rows. Not found: rows before it vanished, and
//! the walk *steps back* to smaller positions, a bounded number of times, until a page
//! lists the anchor again, and goes on after it. The start of the listing needs no
//! anchor, so a step back that reaches it starts the walk afresh there. A walk that
//! cannot find its anchor within the bound counts a **shift** and goes on, and the run
//! then keeps its old high-water. A page that lists nothing after the anchor ends the
//! walk (APIs that answer a page past the end with the last page again).
//!
//! Positions count rows from the start of the listing as the current request asks for
//! it; a page-number API's positions are multiples of the page size.

use std::collections::HashMap;

/// Step backs at one boundary before the walk gives up on finding its anchor.
pub const MAX_STEP_BACKS: u32 = 8;

/// What a run found shifting under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shifts {
    /// Requests made to step back or to check a page boundary again after a shift.
    pub step_backs: u64,
    /// Page boundaries at which no anchor was found again: rows may have been skipped.
    pub shifted: u64,
}

impl Shifts {
    /// What happened since `before`.
    pub fn since(self, before: Shifts) -> Shifts {
        Shifts {
            step_backs: self.step_backs - before.step_backs,
            shifted: self.shifted - before.shifted,
        }
    }
}

/// The rows of one accepted page: the position of its first row and its keys in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub start: u64,
    pub keys: Vec<String>,
}

impl Window {
    /// The latest-positioned of this window's keys that `keys` lists: (its index in the
    /// window, its index in `keys`).
    fn find(&self, keys: &[String]) -> Option<(usize, usize)> {
        // First places only: a page that lists a key twice is the upstream's to explain.
        let mut at = HashMap::with_capacity(keys.len());
        for (j, key) in keys.iter().enumerate() {
            at.entry(key.as_str()).or_insert(j);
        }
        self.keys
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, key)| at.get(key.as_str()).map(|&j| (i, j)))
    }

    /// The position of the window's last row.
    fn last(&self) -> u64 {
        self.start + (self.keys.len() as u64).saturating_sub(1)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// The next page reads on from this position.
    Forward {
        at: u64,
    },
    /// A page-number API's page listed no key of the anchor: the anchor's page is asked
    /// for again. `forward` is the page read; `last`: it ended the listing.
    Check {
        forward: Window,
        last: bool,
    },
    /// The anchor was not where it should be: a page at a smaller position is asked for.
    /// `resume` is where the walk goes on if no anchor is found.
    StepBack {
        at: u64,
        steps: u32,
        resume: Window,
        last: bool,
    },
    Done,
}

/// The walk over one listing.
#[derive(Debug, Clone)]
pub struct Walk {
    /// Rows a page holds.
    limit: u64,
    /// Pages are asked for by number: they cannot overlap.
    numbered: bool,
    /// Pages are anchored (always, except in the test that shows what anchoring prevents).
    anchored: bool,
    /// The page accepted last, whose keys the next page must list.
    anchor: Option<Window>,
    state: State,
    /// The last reply was accepted as the new anchor and the walk reads on.
    accepted: bool,
    shifts: Shifts,
}

/// What the walk does after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Ask for [`Walk::position`].
    Read,
    Done,
}

impl Walk {
    /// A walk over pages of `limit` rows, asked for by number (`numbered`) or by offset.
    /// An offset page of one row cannot overlap the one before either: it is checked like
    /// a numbered one.
    pub fn new(limit: u32, numbered: bool) -> Self {
        let limit = u64::from(limit.max(1));
        Walk {
            limit,
            numbered: numbered || limit == 1,
            anchored: true,
            anchor: None,
            state: State::Forward { at: 0 },
            accepted: false,
            shifts: Shifts::default(),
        }
    }

    /// A walk that trusts its positions, as offset paging did before anchors: only for
    /// the test that shows what anchoring prevents.
    #[cfg(test)]
    pub fn unanchored(limit: u32, numbered: bool) -> Self {
        Walk {
            anchored: false,
            ..Walk::new(limit, numbered)
        }
    }

    /// The position of the next request.
    pub fn position(&self) -> u64 {
        match &self.state {
            State::Forward { at } | State::StepBack { at, .. } => *at,
            State::Check { .. } => self.anchor_page(),
            State::Done => 0,
        }
    }

    /// Whether the next request reads on (not a check or a step back).
    pub fn reads_on(&self) -> bool {
        matches!(self.state, State::Forward { .. })
    }

    /// What the run found shifting under it so far.
    pub fn shifts(&self) -> Shifts {
        self.shifts
    }

    /// Whether the last reply was accepted as the anchor of the page after it (not a
    /// check, a step back or the end).
    pub fn accepted(&self) -> Option<&Window> {
        self.accepted.then_some(self.anchor.as_ref()).flatten()
    }

    /// Goes on in a new listing (seek mode's next query) whose first rows are the last
    /// accepted page's `tie` last keys: the next page reads on after them.
    pub fn rebase(&mut self, tie: usize) {
        let Some(mut anchor) = self.anchor.take() else {
            return;
        };
        let tie = tie.clamp(1, anchor.keys.len());
        anchor.keys.drain(..anchor.keys.len() - tie);
        anchor.start = 0;
        self.state = State::Forward {
            at: self.after(&anchor),
        };
        self.anchor = Some(anchor);
    }

    /// Reads on from `at` instead (the page a reply names next).
    pub fn jump(&mut self, at: u64) {
        if let State::Forward { at: next } = &mut self.state {
            *next = at;
        }
    }

    /// The position of the page read after `window`: overlapping its last row, or the
    /// page after it.
    fn after(&self, window: &Window) -> u64 {
        if self.numbered {
            // The page holding the first row after the window.
            (window.last() + 1) / self.limit * self.limit
        } else {
            window.last()
        }
    }

    /// The position of the page that lists the anchor's last row.
    fn anchor_page(&self) -> u64 {
        let last = self.anchor.as_ref().map_or(0, Window::last);
        if self.numbered {
            last / self.limit * self.limit
        } else {
            last
        }
    }

    /// The distance of one step back.
    fn step(&self) -> u64 {
        if self.numbered {
            self.limit
        } else {
            self.limit - 1
        }
    }

    /// Takes the page of `keys` to be the anchor and reads on after it.
    fn accept(&mut self, window: Window) -> Next {
        let at = self.after(&window);
        self.anchor = Some(window);
        self.accepted = true;
        self.state = State::Forward { at };
        Next::Read
    }

    /// Takes in the keys of the reply to the request at [`Walk::position`]; `ends`: the
    /// reply says it is the listing's last page (a short page, or no next page named).
    pub fn advance(&mut self, keys: Vec<String>, ends: bool) -> Next {
        self.accepted = false;
        let at = self.position();
        let page = Window { start: at, keys };
        let next = match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Next::Done,
            State::Forward { .. } => self.forward(page, ends),
            State::Check { forward, last } => self.check(page, forward, last),
            State::StepBack {
                steps,
                resume,
                last,
                ..
            } => self.step_back(page, steps, resume, last),
        };
        if next == Next::Done {
            self.state = State::Done;
            self.accepted = false;
        }
        next
    }

    fn forward(&mut self, page: Window, ends: bool) -> Next {
        if !self.anchored {
            return self.trusted(page, ends);
        }
        let Some(anchor) = self.anchor.clone() else {
            // The listing's first page needs no anchor.
            return self.restart_at(page, ends);
        };
        match anchor.find(&page.keys) {
            Some((i, j)) => {
                // Nothing after the anchor: the listing ends (or the upstream answered a
                // page past the end with the last one again).
                let nothing_after = i + 1 == anchor.keys.len() && j + 1 == page.keys.len();
                if ends || nothing_after {
                    return Next::Done;
                }
                self.accept(page)
            }
            None if self.numbered => {
                self.state = State::Check {
                    forward: page,
                    last: ends,
                };
                Next::Read
            }
            None => {
                let last = ends;
                self.lost(page.clone(), page, last)
            }
        }
    }

    /// Without anchors: the next page starts where this one ends.
    fn trusted(&mut self, page: Window, ends: bool) -> Next {
        if ends || page.keys.is_empty() {
            return Next::Done;
        }
        let at = if self.numbered {
            page.start + self.limit
        } else {
            page.start + page.keys.len() as u64
        };
        self.anchor = Some(page);
        self.accepted = true;
        self.state = State::Forward { at };
        Next::Read
    }

    /// A page-number API's anchor page, read again after the page that follows it.
    fn check(&mut self, page: Window, forward: Window, last: bool) -> Next {
        let anchor = self.anchor.clone().expect("a check has an anchor");
        if anchor.find(&page.keys).is_some() {
            // The boundary held (rows that slid onto the anchor's page since are read
            // now, with this page); the page read after it is the next anchor.
            if last || forward.keys.is_empty() {
                return Next::Done;
            }
            return self.accept(forward);
        }
        self.lost(page, forward, last)
    }

    /// `page` lists no key of the anchor where it should have: step back from it, unless
    /// it is the listing's start, which needs no anchor. `resume` is where the walk goes
    /// on if no anchor is found; `last`: it ended the listing.
    fn lost(&mut self, page: Window, resume: Window, last: bool) -> Next {
        if page.start == 0 {
            let short = (page.keys.len() as u64) < self.limit;
            return self.restart_at(page, short);
        }
        self.shifts.step_backs += 1;
        self.state = State::StepBack {
            at: page.start.saturating_sub(self.step()),
            steps: 1,
            resume,
            last,
        };
        Next::Read
    }

    fn step_back(&mut self, page: Window, steps: u32, resume: Window, last: bool) -> Next {
        let anchor = self.anchor.clone().expect("a step back has an anchor");
        let short = (page.keys.len() as u64) < self.limit;
        if anchor.find(&page.keys).is_some() || page.start == 0 {
            // Found again (or at the listing's start, which needs no anchor): go on after
            // this page, re-reading what follows it.
            return self.restart_at(page, short);
        }
        if steps >= MAX_STEP_BACKS {
            tracing::warn!(
                steps,
                "no anchor found again after rows shifted under the run: it reads on, and keeps its old high-water"
            );
            self.shifts.shifted += 1;
            return self.restart_at(resume, last);
        }
        self.shifts.step_backs += 1;
        self.state = State::StepBack {
            at: page.start.saturating_sub(self.step()),
            steps: steps + 1,
            resume,
            last,
        };
        Next::Read
    }

    /// Goes on after `page` as after a first page; `ends`: the listing ends with it.
    fn restart_at(&mut self, page: Window, ends: bool) -> Next {
        if ends || page.keys.is_empty() {
            return Next::Done;
        }
        self.accept(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ids: &[u32]) -> Vec<String> {
        ids.iter().map(u32::to_string).collect()
    }

    /// A listing read by `walk` by offsets or page numbers (a short page ends it), where
    /// `change` runs before the `n`th request (counting from 1). Returns the keys read,
    /// the positions asked for and the walk.
    fn read(
        mut walk: Walk,
        mut listing: Vec<u32>,
        mut change: impl FnMut(usize, &mut Vec<u32>),
    ) -> (Vec<u32>, Vec<u64>, Walk) {
        let (mut read, mut asked) = (Vec::new(), Vec::new());
        for n in 1..1000 {
            change(n, &mut listing);
            let at = walk.position() as usize;
            asked.push(at as u64);
            let rows: Vec<u32> = listing
                .iter()
                .copied()
                .skip(at)
                .take(walk.limit as usize)
                .collect();
            read.extend(&rows);
            let ends = (rows.len() as u64) < walk.limit;
            if walk.advance(keys(&rows), ends) == Next::Done {
                return (read, asked, walk);
            }
        }
        panic!("the walk did not end");
    }

    fn all_read(read: &[u32], listing: &[u32]) -> bool {
        listing.iter().all(|id| read.contains(id))
    }

    #[test]
    fn offset_pages_overlap_by_one_row() {
        let (got, asked, walk) = read(Walk::new(3, false), (1..=7).collect(), |_, _| {});
        assert_eq!(asked, [0, 2, 4, 6]);
        assert_eq!(got, [1, 2, 3, 3, 4, 5, 5, 6, 7, 7]);
        assert_eq!(walk.shifts(), Shifts::default());
    }

    #[test]
    fn a_row_deleted_before_the_offset_is_a_step_back_not_a_skip() {
        let listing: Vec<u32> = (1..=10).collect();
        let delete_first = |n: usize, l: &mut Vec<u32>| {
            if n == 3 {
                l.remove(0);
            }
        };
        let (got, asked, walk) = read(Walk::new(2, false), listing.clone(), delete_first);
        assert!(all_read(&got, &listing[1..]), "{got:?}");
        // 0, 1, then 2 lists no anchor (3 slid to 1): one step back to 1, on from there.
        assert_eq!(&asked[..5], [0, 1, 2, 1, 2]);
        assert_eq!(walk.shifts().step_backs, 1);
        let (got, _, _) = read(Walk::unanchored(2, false), listing, delete_first);
        assert!(!got.contains(&5), "the row that slid is skipped: {got:?}");
    }

    #[test]
    fn a_row_moved_to_the_end_is_a_step_back_not_a_skip() {
        let listing: Vec<u32> = (1..=10).collect();
        let move_first = |n: usize, l: &mut Vec<u32>| {
            if n == 2 {
                let first = l.remove(0);
                l.push(first);
            }
        };
        let (got, _, walk) = read(Walk::new(2, false), listing.clone(), move_first);
        assert!(all_read(&got, &listing), "{got:?}");
        assert_eq!(walk.shifts().step_backs, 1);
        assert_eq!(walk.shifts().shifted, 0);
        let (got, _, _) = read(Walk::unanchored(2, false), listing, move_first);
        assert!(!got.contains(&3), "{got:?}");
    }

    #[test]
    fn numbered_pages_are_checked_by_asking_for_the_page_before_again() {
        let (got, asked, _) = read(Walk::new(2, true), (1..=5).collect(), |_, _| {});
        assert_eq!(asked, [0, 2, 0, 4, 2]);
        assert!(all_read(&got, &[1, 2, 3, 4, 5]));
        // A row deleted between the page after the anchor and its check: the check
        // lists the row that slid.
        let listing: Vec<u32> = (1..=10).collect();
        let (got, _, _) = read(Walk::new(2, true), listing.clone(), |n, l| {
            if n == 3 {
                l.remove(0);
            }
        });
        assert!(all_read(&got, &listing[1..]), "{got:?}");
        let (got, _, _) = read(Walk::unanchored(2, true), listing, |n, l| {
            if n == 2 {
                l.remove(0);
            }
        });
        assert!(!got.contains(&3), "{got:?}");
    }

    #[test]
    fn numbered_pages_that_lost_their_anchor_step_back() {
        let listing: Vec<u32> = (1..=12).collect();
        // Pages at 0, 2, 0 (the check), 4; then rows 1-4 go: the check of the page at 2
        // lists neither 3 nor 4, and the step back reaches the start.
        let (got, asked, walk) = read(Walk::new(2, true), listing.clone(), |n, l| {
            if n == 5 {
                l.drain(..4);
            }
        });
        assert_eq!(&asked[..7], [0, 2, 0, 4, 2, 0, 2]);
        assert!(all_read(&got, &listing[4..]), "{got:?}");
        assert_eq!(walk.shifts().step_backs, 1);
    }

    /// A page-number API that answers every page past the end with the last one: whole
    /// pages end when the last comes again, other sizes at the short page.
    #[test]
    fn a_clamped_page_past_the_end_ends_the_walk() {
        for len in 1..=9u32 {
            let listing: Vec<u32> = (1..=len).collect();
            let mut walk = Walk::new(2, true);
            let mut read = Vec::new();
            for requests in 1.. {
                assert!(requests < 50, "len {len}: the walk did not end");
                let pages = listing.len().div_ceil(2);
                let page = (walk.position() as usize / 2).min(pages - 1);
                let rows: Vec<u32> = listing.iter().copied().skip(page * 2).take(2).collect();
                read.extend(&rows);
                if walk.advance(keys(&rows), rows.len() < 2) == Next::Done {
                    break;
                }
            }
            assert!(all_read(&read, &listing), "len {len}");
            assert_eq!(walk.shifts(), Shifts::default());
        }
    }

    #[test]
    fn a_walk_that_cannot_find_its_anchor_counts_a_shift() {
        // After the page at 2, rows 1-30 vanish: three steps back reach the start, which
        // needs no anchor.
        let listing: Vec<u32> = (1..=60).collect();
        let (got, _, walk) = read(Walk::new(2, false), listing.clone(), |n, l| {
            if n == 4 {
                l.drain(..30);
            }
        });
        assert_eq!(walk.shifts().shifted, 0);
        assert_eq!(walk.shifts().step_backs, 3);
        assert!(all_read(&got, &listing[30..]));
        // Far from the start, eight steps back of one row find neither key of the anchor.
        let (_, _, walk) = read(Walk::new(2, false), (1..=200).collect(), |n, l| {
            if n == 30 {
                l.drain(..40);
            }
        });
        assert_eq!(walk.shifts().shifted, 1);
        assert_eq!(walk.shifts().step_backs, u64::from(MAX_STEP_BACKS));
    }
}
