//! Answers the kubelet reuses for a short while: pods created together
//! (a Deployment scaled out, a scale from zero) ask the API server the
//! same questions, and one answer can serve them all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Answers by key, each good for `ttl` after it was read. At most `max`
/// are kept: past it the expired ones are dropped and, if all are fresh,
/// everything, so the map cannot grow with the names pods may give.
pub struct Recent<V> {
    ttl: Duration,
    max: usize,
    seen: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Recent<V> {
    pub fn new(ttl: Duration, max: usize) -> Recent<V> {
        Recent {
            ttl,
            max,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The answer for `key`, if one was read within the last `ttl`.
    pub fn get(&self, key: &str) -> Option<V> {
        let seen = self.seen.lock();
        let (at, v) = seen.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Remembers `v` for `key` from now.
    pub fn put(&self, key: String, v: V) {
        let mut seen = self.seen.lock();
        if seen.len() >= self.max {
            seen.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if seen.len() >= self.max {
                seen.clear();
            }
        }
        seen.insert(key, (Instant::now(), v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_map_stays_bounded() {
        let r = Recent::new(Duration::from_millis(50), 2);
        r.put("a".into(), 1);
        assert_eq!(r.get("a"), Some(1));
        assert_eq!(r.get("b"), None);
        r.put("b".into(), 2);
        r.put("c".into(), 3);
        assert!(r.seen.lock().len() <= 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.get("c"), None);
    }
}
