"""Runtimes: the driver protocol, the process driver, images, private addresses."""
