//! Registrar and B2BUA — being written.
