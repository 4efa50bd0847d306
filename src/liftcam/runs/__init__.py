"""Long runs over many images: resumable records and reports."""

#: Images per batch of ``liftcam explain`` and ``liftcam evaluate`` unless told otherwise; batches are fixed by
#: image index, so an evaluate run stores its size and a resume keeps it.
DEFAULT_BATCH_SIZE = 8
