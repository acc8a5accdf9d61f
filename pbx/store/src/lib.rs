//! Storage — being written.
