"""edgeclass.workflow: runs that cross every stage, from photos to the device runtime.

Owns: ``edgeclass demo`` (:mod:`.demo`: generated dataset -> train -> int8
convert -> video -> device runtime, with a PASS/FAIL summary) and the
dataset it draws (:mod:`.synthetic`). It imports ``edgeclass.train``,
``edgeclass.convert`` and ``edgeclass.device``; nothing imports it but the CLI.
"""
