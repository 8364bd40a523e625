"""The SVSM at VMPL0: it hosts the vTPM in guest memory, its state sealed at rest."""
