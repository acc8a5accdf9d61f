//! Runtime — being written.
