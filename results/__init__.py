"""What the gateway sends back: the TID 1500 Structured Report and the heatmap Secondary Capture.

The builders here turn :class:`inference.results.Prediction` values and the
source image datasets into DICOM objects (built with highdicom); the senders
(C-STORE SCU, outbox) live elsewhere and only see finished datasets.
"""
