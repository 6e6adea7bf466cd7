//! The conformance suite: the same tests for every backend.
//!
//! A backend crate runs it against itself with
//! `mailstore::conformance_suite!(|| MyTarget::new());` in a test file, where the closure
//! makes a fresh, empty store (e.g. in a new temporary directory) each time.

use crate::traits::Store;

/// A store under test. `open` may be called several times: each call opens the *same*
/// store again (a new handle), so tests can check that changes persist.
pub trait ConformanceTarget {
    fn open(&self) -> Box<dyn Store>;
}

/// Expands to one `#[test]` per conformance test, each with a fresh target from `$make`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::conformance_suite!(@tests $make;);
    };
    (@tests $make:expr; $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                let target = ($make)();
                $crate::conformance::$name(&target);
            }
        )*
    };
}
