"""What the PyTorch reference scripts in bench/ share: naming the machine they ran on."""

import platform

import torch


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (or the platform's best guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name(dev):
    """The GPU's name, or the CPU's with the thread count torch uses."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"
