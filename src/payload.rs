//! The JSON body view: read and splice top-level fields. (being written)
