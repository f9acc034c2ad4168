"""The DICOM node: association policy, C-ECHO/C-STORE SCP, spool, journal, queue and workers."""
