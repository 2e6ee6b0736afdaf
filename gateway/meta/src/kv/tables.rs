//! Every table of the metadata, with the types redb keys and values it by
//! (the names are redb's table names and PostgreSQL's `kv.tbl`: never
//! rename one). What each holds is documented where its rules are.

/// How redb types a table's keys. [`super::KvRead`] sees each as bytes: a
/// string as its UTF-8, a `u64` as its 8 big-endian bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Bytes,
    Str,
    U64,
}

/// How redb types a table's values: a `u64` is 8 big-endian bytes and a
/// `u8` one byte to the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Bytes,
    U64,
    U8,
}

/// One table: its place in [`ALL`], its name, its types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    pub(crate) index: usize,
    pub name: &'static str,
    pub key: KeyKind,
    pub value: ValueKind,
}

macro_rules! tables {
    ($($(#[$doc:meta])* $ident:ident = ($name:literal, $key:ident, $value:ident);)*) => {
        tables!(@each 0usize; $($(#[$doc])* $ident = ($name, $key, $value);)*);
        /// Every table, in the order of their indexes.
        pub const ALL: &[Table] = &[$($ident),*];
    };
    (@each $n:expr; $(#[$doc:meta])* $ident:ident = ($name:literal, $key:ident, $value:ident); $($rest:tt)*) => {
        $(#[$doc])*
        pub const $ident: Table = Table {
            index: $n,
            name: $name,
            key: KeyKind::$key,
            value: ValueKind::$value,
        };
        tables!(@each $n + 1; $($rest)*);
    };
    (@each $n:expr;) => {};
}

tables! {
    BUCKETS = ("buckets", Str, Bytes);
    /// Every version of every object, keyed `bucket 0x00 key 0x00 !seq`.
    VERSIONS = ("versions", Bytes, Bytes);
    /// Objects as releases before versioning kept them.
    LEGACY_OBJECTS = ("objects", Bytes, Bytes);
    UPLOADS = ("uploads", Bytes, Bytes);
    PARTS = ("parts", Bytes, Bytes);
    COMPLETED_UPLOADS = ("completed_uploads", Bytes, Bytes);
    INTENTS = ("intents", U64, Bytes);
    COUNTERS = ("counters", Str, U64);
    JOBS = ("jobs", Str, Bytes);
    USERS = ("users", Str, Bytes);
    /// Garbage as the first release kept it.
    LEGACY_GARBAGE = ("garbage", U64, Bytes);
    GARBAGE_DUE = ("garbage_due", Bytes, Bytes);
    GARBAGE_AGE = ("garbage_age", Bytes, Bytes);
    GARBAGE_TOTALS = ("garbage_totals", Str, Bytes);
    REPAIR_QUEUE = ("repair_queue", Bytes, Bytes);
    REPAIR_INDEX = ("repair_index", Bytes, U8);
    OUTBOX = ("outbox", U64, Bytes);
    JOURNAL_UNITS = ("journal_units", U64, Bytes);
    /// Leases: which gateway does a piece of work, until when.
    LEASES = ("leases", Str, Bytes);
    /// The gateways sharing the store, by owner (`members.rs`).
    GATEWAYS = ("gateways", Str, Bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_places_and_names_are_unique() {
        for (i, t) in ALL.iter().enumerate() {
            assert_eq!(t.index, i, "{}", t.name);
        }
        let names: std::collections::HashSet<_> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), ALL.len());
    }
}
