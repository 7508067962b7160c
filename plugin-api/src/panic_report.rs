//! A panic inside an entry point is reported once, through the boundary, and not also by the
//! plugin's own panic hook.
//!
//! A plugin library links its own copy of `std`, with its own default panic hook: left alone, a
//! panic in a plugin prints its raw message to the host's stderr (where the host's redaction of
//! the account's secrets never sees it), and with `RUST_BACKTRACE` set it first captures and
//! symbolizes a backtrace, which on a loaded machine took longer than the host allows a plugin
//! call. Inside [`catch`] the hook only notes where the panic happened; the message and the
//! location go back to the host as the call's plugin-fault error, which the host redacts and
//! logs. Outside an entry point (a plugin's own unit tests, say) the previous hook runs as before.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside [`catch`].
    static IN_ENTRY_POINT: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic inside [`catch`] on this thread happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_ENTRY_POINT.with(Cell::get) {
                let location = info
                    .location()
                    .map(|location| format!("{}:{}", location.file(), location.line()));
                LOCATION.with(|slot| *slot.borrow_mut() = location);
            } else {
                previous(info);
            }
        }));
    });
}

/// A caught panic: its payload and, when known, `file:line` where it happened.
pub(crate) struct CaughtPanic {
    pub payload: Box<dyn Any + Send>,
    pub location: Option<String>,
}

/// Runs `body`, catching a panic without the hook printing it.
pub(crate) fn catch<R>(body: impl FnOnce() -> R) -> Result<R, CaughtPanic> {
    install();
    let outer = IN_ENTRY_POINT.with(|flag| flag.replace(true));
    let result = catch_unwind(AssertUnwindSafe(body));
    IN_ENTRY_POINT.with(|flag| flag.set(outer));
    result.map_err(|payload| CaughtPanic {
        payload,
        location: LOCATION.with(|slot| slot.borrow_mut().take()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_carries_its_message_and_where_it_happened() {
        let caught = catch(|| -> u32 { panic!("deliberate panic for the test") })
            .expect_err("the panic is caught");
        assert_eq!(
            caught.payload.downcast_ref::<&str>(),
            Some(&"deliberate panic for the test")
        );
        // Only this module's hook records the location: `Some` shows it ran for the panic.
        let location = caught.location.expect("the hook noted where");
        assert!(
            location.starts_with("plugin-api/src/panic_report.rs:"),
            "{location}"
        );
        // And the flag is down again afterwards: an ordinary call returns its value.
        assert_eq!(catch(|| 7).ok(), Some(7));
        assert!(!IN_ENTRY_POINT.with(Cell::get));
    }
}
