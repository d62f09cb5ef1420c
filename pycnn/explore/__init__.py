"""Design spaces (space), explorations (run), EDFs and width fits (report). Above the compiler."""
