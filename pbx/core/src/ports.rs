//! The RTP port pool (pure): even ports for RTP with RTCP on the next odd port (RFC 3550
//! §11), handed out in FIFO order so a port just released is the last to be reused (late
//! packets of the previous call must not reach the next one).

use std::collections::{HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    pub rtp: u16,
    pub rtcp: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortRangeError {
    #[error("the RTP port range {0}-{1} is empty or reversed")]
    Empty(u16, u16),
    #[error("the RTP port range {0}-{1} holds no even/odd pair")]
    NoPair(u16, u16),
}

#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    in_use: HashSet<u16>,
    /// Ports the runtime could not bind (another process holds them); never handed out
    /// again in this run.
    broken: HashSet<u16>,
}

impl PortPool {
    /// A pool over `first..=last` (e.g. 20000-30000).
    pub fn new(first: u16, last: u16) -> Result<PortPool, PortRangeError> {
        if first > last || first == 0 {
            return Err(PortRangeError::Empty(first, last));
        }
        let start = first + (first % 2);
        let free: VecDeque<u16> = (start..last)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|r| r <= last))
            .collect();
        if free.is_empty() {
            return Err(PortRangeError::NoPair(first, last));
        }
        Ok(PortPool {
            free,
            in_use: HashSet::new(),
            broken: HashSet::new(),
        })
    }

    pub fn allocate(&mut self) -> Option<PortPair> {
        let rtp = self.free.pop_front()?;
        self.in_use.insert(rtp);
        Some(PortPair { rtp, rtcp: rtp + 1 })
    }

    pub fn release(&mut self, pair: PortPair) {
        if self.in_use.remove(&pair.rtp) && !self.broken.contains(&pair.rtp) {
            self.free.push_back(pair.rtp);
        }
    }

    /// Marks a pair as unusable (the runtime failed to bind it) and releases it.
    pub fn mark_broken(&mut self, pair: PortPair) {
        self.broken.insert(pair.rtp);
        self.in_use.remove(&pair.rtp);
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_odd_and_reused_last() {
        let mut pool = PortPool::new(20001, 20008).unwrap();
        assert_eq!(pool.available(), 3); // 20002, 20004, 20006 (20008 has no 20009)
        let a = pool.allocate().unwrap();
        assert_eq!(
            a,
            PortPair {
                rtp: 20002,
                rtcp: 20003
            }
        );
        let b = pool.allocate().unwrap();
        pool.release(a);
        assert_eq!(pool.allocate().unwrap().rtp, 20006);
        assert_eq!(pool.allocate().unwrap().rtp, 20002);
        assert_eq!(pool.allocate(), None);
        pool.mark_broken(b);
        pool.release(b);
        assert_eq!(pool.available(), 0);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(PortPool::new(3000, 2000).is_err());
        assert!(PortPool::new(0, 10).is_err());
        assert!(PortPool::new(4001, 4001).is_err());
        assert!(PortPool::new(65534, 65535).is_ok());
    }
}
