//! eddy
pub use eddy_nn as nn;
pub use eddy_ops as ops;
pub use eddy_tape as tape;
