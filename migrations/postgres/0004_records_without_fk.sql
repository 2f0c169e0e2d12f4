-- The mirror no longer references its stream: the foreign key's check, one lookup and
-- row lock on the stream per inserted record, made up over a quarter of a page commit's
-- time. Removing a stream or a source now deletes its records explicitly (after its jobs,
-- so that no page of theirs can still commit records behind the delete).
ALTER TABLE records DROP CONSTRAINT records_stream_id_fkey;
