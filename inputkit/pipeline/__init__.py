"""The data path: what carries samples from the workers to the device.

The dispatcher hands out index ranges, the queues hold chunks and batches, the
batcher re-chunks into exact batches, the device stage moves them to the device,
and the coordinator wires one input on one device together.
"""
