"""Driving a device step (DeviceStep or ConvDeviceStep) through whole epochs, for the tests that compare
a device run (real or emulated) with the twin engine's."""

import numpy as np


def run_epochs(st, xp, p, m, v, n, batch, epochs, first_epoch=1):
    """Epochs first_epoch.. of n examples in batches; returns (per-step losses, params, m, v, the step) on
    the host, and closes the step."""
    host = (lambda a: a) if xp is np else xp.asnumpy
    steps = -(-n // batch)
    losses = []
    for epoch in range(first_epoch, first_epoch + epochs):
        st.start_epoch(epoch, np.linspace(0.5, 1.0, steps).astype(np.float32), (epoch - 1) * steps)
        for s in range(0, n, batch):
            st.step(min(batch, n - s))
            losses.append(host(st.loss).copy())
    st.synchronize()
    out = np.array(losses), host(p).copy(), host(m).copy(), host(v).copy(), st
    st.close()
    return out
