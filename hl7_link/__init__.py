"""HL7 v2 link to the RIS/EHR: ORU^R01 result messages and their MLLP transport.

:mod:`hl7_link.oru` builds the message (HL7 v2.5.1 chapter 7, validated with
hl7apy), :mod:`hl7_link.mllp` sends it (MLLP, HL7 v2.5.1 Appendix C) and
:mod:`hl7_link.ack` reads the answer (MSA segment, HL7 table 0008).
"""
