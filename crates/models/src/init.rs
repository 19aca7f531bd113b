//! Seeded initialisation and dropout on CPU (Candle's `Device::Cpu.set_seed` returns an error).
