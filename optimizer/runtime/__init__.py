"""The runtime: the job queue, the worker that runs jobs, the cron scheduler, the wake-up
notifications, retry delays and the validation of new jobs."""
