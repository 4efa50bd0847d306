"""Long runs over many images: resumable records and reports."""
